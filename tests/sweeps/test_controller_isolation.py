"""One sweep's pass that fails, whatever the error, does not hold up the others: each is
driven on its own, and the failed one is tried again on the next pass."""

from __future__ import annotations

from pathlib import Path

import msgspec

from cairn.bus import Connection
from cairn.services.sweeps import SweepsService
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
