"""The autoscaler's arithmetic, without a server: request telemetry kept in a bounded number
of fixed windows, and the replica count it asks for."""

from __future__ import annotations

import pytest

from cairn.proto.serving import ScaleSettings
from cairn.services.scheduler._autoscale import (
    BUCKET_S,
    BUCKETS,
    Windows,
    cooldown_of,
    desired_replicas,
)


def test_telemetry_is_kept_in_a_bounded_number_of_fixed_windows() -> None:
    windows = Windows()
    for second in range(0, 3600):  # an hour of a report a second
        windows.add(float(second), requests=2, busy_s=0.5)
    assert len(windows.buckets) == BUCKETS
    rows = windows.rows()
    assert rows[-1] == {"start": 3600 - BUCKET_S, "requests": 10, "busy_s": 2.5}
    assert windows.since(3600 - 10.0) == (20, 5.0)  # the last two windows


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
