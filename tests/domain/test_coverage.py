"""Every command of every aggregate has a row in its given-when-then table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from cairn.domain import (
    Aggregate,
    asset,
    batch,
    endpoint,
    experiment,
    model,
    parallel,
    pipeline,
    published,
    run,
    schedule,
    secret,
    sweep,
    webhook,
    workspace,
)
from tests.domain import (
    test_asset,
    test_batch,
    test_endpoint,
    test_model,
    test_parallel,
    test_pipeline,
    test_published,
    test_run,
    test_schedule,
    test_secret,
    test_small,
    test_sweep,
    test_webhook,
)
from tests.domain.gwt import Case, command_types, uncovered

TABLES: dict[str, tuple[Aggregate[Any, Any], Sequence[Case]]] = {
    "workspace": (workspace.AGGREGATE, test_small.WORKSPACE_CASES),
    "experiment": (experiment.AGGREGATE, test_small.EXPERIMENT_CASES),
    "run": (run.AGGREGATE, test_run.CASES),
    "staging": (run.STAGING, test_run.STAGING_CASES),
    "model": (model.AGGREGATE, test_model.CASES),
    **{kind: (agg, test_asset.CASES) for kind, agg in asset.AGGREGATES.items()},
    "secret": (secret.AGGREGATE, test_secret.CASES),
    "keyring": (secret.KEYRING, test_secret.KEYRING_CASES),
    "schedule": (schedule.AGGREGATE, test_schedule.CASES),
    "pipeline": (pipeline.AGGREGATE, test_pipeline.CASES),
    "parallel": (parallel.AGGREGATE, test_parallel.CASES),
    "batch_endpoint": (batch.AGGREGATE, test_batch.CASES),
    "published_pipeline": (published.PUBLISHED, test_published.CASES),
    "pipeline_endpoint": (published.ENDPOINT, test_published.ENDPOINT_CASES),
    "webhook": (webhook.AGGREGATE, test_webhook.CASES),
    "sweep": (sweep.AGGREGATE, test_sweep.CASES),
    "endpoint": (endpoint.ENDPOINT, test_endpoint.ENDPOINT_CASES),
    "deployment": (endpoint.DEPLOYMENT, test_endpoint.DEPLOYMENT_CASES),
}


@pytest.mark.parametrize("name", TABLES)
def test_every_command_has_a_row(name: str) -> None:
    aggregate, cases = TABLES[name]
    assert uncovered(aggregate, cases) == []


def test_the_union_is_walked() -> None:
    """The check sees each member of a union (and a single command type as itself)."""
    assert len(command_types(run.AGGREGATE)) == 17
    assert len(command_types(experiment.AGGREGATE)) == 2
    assert command_types(run.STAGING) == (run.StagingCommand,)
    assert len(command_types(workspace.AGGREGATE)) == 6
    dropped = [c for c in test_run.CASES if not isinstance(c.when, run.LoseAttempt)]
    assert uncovered(run.AGGREGATE, dropped) == ["LoseAttempt"]
