"""The autoscaler's arithmetic, without a server: request telemetry kept in a bounded number
of fixed windows, and the replica count it asks for."""

from __future__ import annotations

import msgspec
import pytest

from cairn.bus import Connection
from cairn.domain.endpoint import DeploymentState
from cairn.proto.serving import DeploymentSpec, ScaleSettings
from cairn.services.scheduler._autoscale import (
    BUCKET_S,
    BUCKETS,
    Telemetry,
    Windows,
    cooldown_of,
    desired_replicas,
)
from cairn.services.scheduler._endpoints import _starting_count


def test_telemetry_is_kept_in_a_bounded_number_of_fixed_windows() -> None:
    windows = Windows()
    for second in range(0, 3600):  # an hour of a report a second
        windows.add(float(second), requests=2, busy_s=0.5)
    assert len(windows.buckets) == BUCKETS
    rows = windows.rows()
    assert rows[-1] == {"start": 3600 - BUCKET_S, "requests": 10, "busy_s": 2.5}
    assert windows.complete(3600.0, 10.0) == (3590.0, 3600.0, 20, 5.0)  # the last two


def _steady(windows: Windows, replicas: int, busy_s: float, until: float) -> None:
    """Each replica reports every 5 s (at its own phase) ``busy_s`` seconds of the last 5."""
    for r in range(replicas):
        at = 1000.0 + 1.3 * r + 0.7
        while at <= until:
            windows.add(at, requests=1, busy_s=busy_s)
            at += 5.0


@pytest.mark.parametrize("now", [1100.0, 1100.5, 1101.3, 1103.0, 1104.9])
def test_a_steady_load_reads_the_same_whatever_the_instant(now: float) -> None:
    """Two replicas at 70 % (3.5 busy seconds per 5 s report): 70 % at any instant, the
    window still filling left out, so an on-target load never scales 2 -> 3."""
    windows = Windows()
    _steady(windows, 2, 3.5, now)
    start, end, _, busy = windows.complete(now, 10.0)
    found = desired_replicas(SCALE, 2, 10, busy, end - start)
    assert found.utilization_pct == 70.0 and found.desired == 2, (now, found)


SCALE = ScaleSettings(min_replicas=1, max_replicas=3, target_utilization_pct=70.0)


@pytest.mark.parametrize(
    ("replicas", "busy_s", "desired"),
    [
        (1, 10.0, 2),  # busy all the time: 100 % against 70 %
        (2, 20.0, 3),
        (2, 40.0, 3),  # held at the max
        (3, 0.0, 1),  # idle: the min
        (3, 21.0, 3),  # 70 %: on target
        (3, 22.0, 3),  # within the tolerance
        (3, 12.0, 2),  # 40 %
    ],
)
def test_the_replica_count_follows_the_utilisation(
    replicas: int, busy_s: float, desired: int
) -> None:
    found = desired_replicas(SCALE, replicas, 100, busy_s, 10.0)
    assert found.desired == desired, found
    assert found.utilization_pct == round(100 * busy_s / (10.0 * replicas), 1)


def test_the_cooldown_is_at_least_a_window() -> None:
    assert cooldown_of(ScaleSettings(polling_interval_s=1.0)) == 10.0
    assert cooldown_of(ScaleSettings(polling_interval_s=30.0)) == 90.0
    assert cooldown_of(ScaleSettings(polling_interval_s=1.0, cooldown_s=0.0)) == 0.0


def test_the_utilisation_is_over_the_requests_a_replica_runs_at_once() -> None:
    """Two replicas each running four requests at once, busy 40 s over 10 s: half their
    capacity (50 %), not 200 %."""
    found = desired_replicas(SCALE, 2, 100, 40.0, 10.0, concurrency=4)
    assert found.utilization_pct == 50.0 and found.desired == 2, found


async def test_the_window_starts_once_the_changed_replicas_are_ready(conn: Connection) -> None:
    """Right after 2 -> 4 replicas, the time the new ones spent starting is not idle time,
    and right after 4 -> 3 the removed one's busy time is not counted against three: no span
    is measured until a whole one passed after the change's replicas were all ready."""
    clock = [1000.0]
    telemetry = Telemetry(conn, clock=lambda: clock[0])
    key = ("ws", "d")
    try:
        await telemetry.follow(*key, ("a", "b"))
        assert telemetry.ready(key, all_ready=True) == 1000.0
        clock[0] = 1030.0
        await telemetry.follow(*key, ("a", "b", "c", "d"))  # scaled out at 1030
        assert telemetry.measured_from(key) is None
        assert telemetry.ready(key, all_ready=False) is None
        clock[0] = 1090.0  # the new replicas start for a minute
        assert telemetry.ready(key, all_ready=True) == 1090.0
        clock[0] = 1095.0
        assert telemetry.ready(key, all_ready=True) == 1090.0  # the first time seen ready
        assert telemetry.measured_from(key) == 1090.0
        windows = telemetry.windows[key]
        assert windows.complete(1096.0, 10.0)[0] < 1090.0  # [1085, 1095): not yet
        assert windows.complete(1100.0, 10.0)[0] >= 1090.0
        clock[0] = 1200.0
        await telemetry.follow(*key, ("a", "b", "c"))  # scaled in at 1200
        assert telemetry.measured_from(key) is None
        assert telemetry.ready(key, all_ready=True) == 1200.0
        assert windows.complete(1205.0, 10.0)[0] < 1200.0
    finally:
        await telemetry.close()


def test_an_update_of_an_autoscaled_deployment_keeps_its_count() -> None:
    """Scaled out to 10 and updated to a spec starting at 2: the new spec starts with 10,
    held within its bounds; a deployment that does not autoscale starts with its count."""
    auto = DeploymentSpec(
        entry_script="score.py", replicas=2, scale=ScaleSettings(min_replicas=1, max_replicas=8)
    )
    ten = DeploymentState(
        exists=True,
        spec=msgspec.structs.replace(auto, scale=ScaleSettings(max_replicas=12)),
        replicas=tuple(f"r{i}" for i in range(10)),
    )
    assert _starting_count(ten, auto) == 8  # the new max
    assert _starting_count(ten, msgspec.structs.replace(auto, scale=SCALE)) == 3
    assert _starting_count(DeploymentState(), auto) == 2  # a new deployment
    fixed = msgspec.structs.replace(auto, scale=None)
    assert _starting_count(ten, fixed) == 2
