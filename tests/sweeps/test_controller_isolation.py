"""One sweep's pass that fails, whatever the error, does not hold up the others: each is
driven on its own, and the failed one is tried again on the next pass."""

from __future__ import annotations

from pathlib import Path

import msgspec

from cairn.bus import Connection
from cairn.services.sweeps import SweepsService
from cairn.services.sweeps._service import _IDLE_TICKS
from cairn.settings import Settings


class Probe(SweepsService):
    """The controller over a fixed list of sweeps, one of which always breaks."""

    def __init__(self, conn: Connection, settings: Settings) -> None:
        super().__init__(conn, settings)
        self.driven: list[str] = []

    def _active(self) -> list[tuple[str, str, float]]:
        return [("w", "broken", 0.0), ("w", "fine", 0.0)]

    async def drive(self, ws: str, sweep_id: str, submitted_at: float) -> None:
        self.driven.append(sweep_id)
        if sweep_id == "broken":
            raise KeyError("a bug in one sweep's pass")


async def test_a_sweep_whose_pass_breaks_does_not_stop_the_others(
    conn: Connection, service_settings: Settings, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(service_settings, state_dir=str(tmp_path))
    probe = Probe(conn, settings)
    try:
        await probe.reconcile()
        await probe.reconcile()
    finally:
        probe.projection.close()
        probe.reports.close()
    assert probe.driven == ["broken", "fine", "broken", "fine"]


class Quiet(Probe):
    """The controller over two sweeps whose passes leave nothing for the timer."""

    async def drive(self, ws: str, sweep_id: str, submitted_at: float) -> None:
        self.driven.append(sweep_id)


async def test_a_timer_tick_with_nothing_to_follow_is_skipped_but_not_for_long(
    conn: Connection, service_settings: Settings, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(service_settings, state_dir=str(tmp_path))
    probe = Quiet(conn, settings)
    try:
        await probe.reconcile()  # the first pass: everything is new
        assert probe.driven == ["broken", "fine"]
        for _ in range(_IDLE_TICKS):  # ticks with no fact applied and nothing pending
            await probe.reconcile()
        assert probe.driven == ["broken", "fine"]
        await probe.reconcile()  # one more: a fact the wake-ups missed is not missed for long
        assert probe.driven == ["broken", "fine"] * 2
        await probe.reconcile()
        assert probe.driven == ["broken", "fine"] * 2
        probe.fact_applied()  # the read model applied a fact the loop acts on: a pass
        await probe.reconcile()
        assert probe.driven == ["broken", "fine"] * 3
        probe.pending = True  # a pass that left something for the timer: the next tick passes
        await probe.reconcile()
        assert probe.driven == ["broken", "fine"] * 4
    finally:
        probe.projection.close()
        probe.reports.close()
