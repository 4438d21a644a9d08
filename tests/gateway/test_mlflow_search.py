"""MLflow's search filter and order keys as Cairn's runs query reads them (the one mapping the
gateway and the agents' MLflow endpoints share)."""

from __future__ import annotations

import pytest

from cairn.errors import InvalidInput
from cairn.services.mlflow import to_cairn_filter, to_cairn_order


@pytest.mark.parametrize(
    ("mlflow", "cairn"),
    [
        ("metrics.rmse < 1", "metrics.`rmse` < 1"),
        ("params.lr = '0.1'", "params.`lr` = '0.1'"),
        ('param.lr = "0.1"', 'params.`lr` = "0.1"'),
        ("tags.mlflow.runName = 'x'", "tags.`mlflow.runName` = 'x'"),
        ("tags.`my key` LIKE 'a%'", "tags.`my key` LIKE 'a%'"),
        ("tags.\"a.b\" != 'v'", "tags.`a.b` != 'v'"),
        ("attributes.status = 'FINISHED'", "status = 'Completed'"),
        (
            "status = 'RUNNING'",
            "status IN ('Running', 'Preparing', 'CancelRequested')",
        ),
        ("status != 'SCHEDULED'", "(status != 'NotStarted' AND status != 'Queued')"),
        ("attributes.run_name = 'r'", "name = 'r'"),
        ("run_id IN ('a', 'b')", "run_id IN ('a', 'b')"),
        ("start_time >= 0", "start_time >= '1970-01-01T00:00:00+00:00'"),
        ("metrics.loss < 1 and params.a = 'x'", "metrics.`loss` < 1 AND params.`a` = 'x'"),
        ("tags.t IS NULL", "tags.`t` IS NULL"),
        ("metrics.x <> 2", "metrics.`x` != 2"),
    ],
)
def test_filters_map_onto_the_runs_query(mlflow: str, cairn: str) -> None:
    assert to_cairn_filter(mlflow) == cairn


@pytest.mark.parametrize(
    ("mlflow", "fault"),
    [
        ("hyper.lr = 1", "hyper.lr"),
        ("attributes.colour = 'x'", "colour"),
        ("tags.t ILIKE 'x'", "ILIKE"),
        ("status = 'DONE'", "DONE"),
        ("metrics.x < 1 ; drop", "cannot read"),
    ],
)
def test_what_cairn_cannot_read_is_refused_by_name(mlflow: str, fault: str) -> None:
    with pytest.raises(InvalidInput, match=fault):
        to_cairn_filter(mlflow)


def test_order_keys() -> None:
    assert to_cairn_order(["metrics.loss DESC", "attributes.start_time", "params.`a.b` asc"]) == (
        "metrics.`loss` DESC",
        "start_time ASC",
        "params.`a.b` ASC",
    )
    with pytest.raises(InvalidInput, match="ASC or DESC"):
        to_cairn_order(["metrics.loss SIDEWAYS"])
    with pytest.raises(InvalidInput, match="not a column"):
        to_cairn_order(["loss.x DESC"])
