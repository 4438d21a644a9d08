"""A deployment's timeouts from the v1 deployment configurations: ``scoring_timeout_ms``
and Cairn's ``rollout_timeout_s`` honoured, and refused by name beyond their ranges
(``cairn.proto.serving.check_timeouts`` is the one range, also the scheduler's)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from cairn.errors import InvalidInput
from cairn.proto.serving import MAX_REQUEST_TIMEOUT_S, check_timeouts
from cairn.sdk import AciWebservice, AksWebservice


def test_the_configurations_carry_both_timeouts() -> None:
    aks = AksWebservice.deploy_configuration(scoring_timeout_ms=5000, rollout_timeout_s=120)
    assert (aks.request_timeout_s, aks.rollout_timeout_s) == (5.0, 120.0)
    plain = AksWebservice.deploy_configuration()
    assert (plain.request_timeout_s, plain.rollout_timeout_s) == (60.0, 1800.0)
    assert AciWebservice.deploy_configuration(rollout_timeout_s=90).rollout_timeout_s == 90.0
    assert AciWebservice.deploy_configuration().rollout_timeout_s == 1800.0


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: AksWebservice.deploy_configuration(rollout_timeout_s=0), "rollout_timeout_s"),
        (lambda: AciWebservice.deploy_configuration(rollout_timeout_s=86401), "rollout_timeout_s"),
        (lambda: AksWebservice.deploy_configuration(scoring_timeout_ms=0), "scoring_timeout_ms"),
        (
            lambda: AksWebservice.deploy_configuration(scoring_timeout_ms=300_001),
            "scoring_timeout_ms",
        ),
        (  # 0 is refused, not taken for 1
            lambda: AksWebservice.deploy_configuration(replica_max_concurrent_requests=0),
            "replica_max_concurrent_requests",
        ),
    ],
)
def test_timeouts_beyond_their_range_are_refused_by_name(
    make: Callable[[], object], named: str
) -> None:
    with pytest.raises(InvalidInput, match=named):
        make()


def test_the_one_range_check_names_what_is_out_of_it() -> None:
    check_timeouts(request_timeout_s=MAX_REQUEST_TIMEOUT_S, rollout_timeout_s=86400)
    for request, rollout, named in [
        (MAX_REQUEST_TIMEOUT_S + 1, 60.0, "request_timeout_s"),
        (math.nan, 60.0, "request_timeout_s"),
        (60.0, -1.0, "rollout_timeout_s"),
    ]:
        with pytest.raises(InvalidInput, match=named):
            check_timeouts(request_timeout_s=request, rollout_timeout_s=rollout)


def test_the_range_check_names_each_value_after_the_callers_prefix() -> None:
    """A caller's prefix (its file) comes before the name of the value out of range, whichever
    of the two it is: a bad request_timeout_s is never reported as rollout_timeout_s."""
    with pytest.raises(InvalidInput) as bad_request:
        check_timeouts(
            request_timeout_s=MAX_REQUEST_TIMEOUT_S + 1, rollout_timeout_s=60.0, where="o.yml: "
        )
    assert bad_request.value.message.startswith("o.yml: request_timeout_s must be within")
    with pytest.raises(InvalidInput) as bad_rollout:
        check_timeouts(request_timeout_s=60.0, rollout_timeout_s=0.0, where="o.yml: ")
    assert bad_rollout.value.message.startswith("o.yml: rollout_timeout_s must be within")
