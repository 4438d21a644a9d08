"""MLflow's experiments: Cairn's experiments (MLflow's ``0`` is ``Default``, or a job's own)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cairn.proto.commands import (
    CreateExperiment,
    ListExperiments,
)
from cairn.services.mlflow._search import (
    ms_of_iso,
)
from cairn.services.mlflow._tracker import (
    DEFAULT_EXPERIMENT,
    MlflowError,
    Tracker,
    _id,
    _invalid,
    _not_found,
    _text,
)

__all__ = ["experiments_create", "experiments_get", "experiments_get_by_name", "experiments_search"]


async def _experiments(t: Tracker) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await t.ask(ListExperiments())).data
    return rows


def _experiment(row: dict[str, Any]) -> dict[str, Any]:
    created = ms_of_iso(row.get("created_at")) or 0
    return {
        "experiment_id": row["experiment_id"],
        "name": row["name"],
        "artifact_location": f"mlflow-artifacts:/{row['experiment_id']}",
        "lifecycle_stage": "active",
        "creation_time": created,
        "last_update_time": created,
        "tags": [],
    }


async def _experiment_by_id(t: Tracker, experiment_id: str) -> dict[str, Any]:
    if experiment_id == "0":  # MLflow's default: a job's own experiment, else Default
        return await _experiment_by_name(t, t.job_experiment or DEFAULT_EXPERIMENT, create=True)
    for row in await _experiments(t):
        if row["experiment_id"] == experiment_id:
            return row
    raise _not_found(f"no experiment with id {experiment_id!r:.80}")


async def _experiment_by_name(t: Tracker, name: str, *, create: bool = False) -> dict[str, Any]:
    for row in await _experiments(t):
        if row["name"] == name:
            return row
    if not create:
        raise _not_found(f"no experiment named {name!r:.200}")
    await t.send(CreateExperiment(command_id=_id(), name=name))
    return await _experiment_by_name(t, name)


async def experiments_create(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    name = _text(req, "name")
    if any(row["name"] == name for row in await _experiments(t)):
        raise MlflowError(
            "RESOURCE_ALREADY_EXISTS", f"experiment {name!r:.200} already exists", 400
        )
    row = await _experiment_by_name(t, name, create=True)
    return {"experiment_id": row["experiment_id"]}


async def experiments_get(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    return {"experiment": _experiment(await _experiment_by_id(t, _text(req, "experiment_id")))}


async def experiments_get_by_name(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    name = _text(req, "experiment_name")
    return {"experiment": _experiment(await _experiment_by_name(t, name))}


async def experiments_search(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    rows = await _experiments(t)
    text = str(req.get("filter") or "").strip()
    if text:
        matches = _name_filter(text)
        rows = [r for r in rows if matches(r["name"])]
    if req.get("page_token"):
        raise _invalid("page_token: every experiment is on the first page")
    return {"experiments": [_experiment(r) for r in rows]}


def _name_filter(text: str) -> Callable[[str], bool]:
    """``name = '...'`` or ``name LIKE '...'`` (``%`` any text, ``_`` one character)."""
    for op in (" LIKE ", " like ", "="):
        column, found, value = text.partition(op)
        value = value.strip()
        if (
            found
            and column.strip().removeprefix("attribute.").removeprefix("attributes.") == "name"
            and len(value) >= 2
            and value[0] == value[-1]
            and value[0] in "'\""
        ):
            wanted = value[1:-1]
            if op == "=":
                return lambda name: name == wanted
            pattern = re.compile(
                "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in wanted),
                re.DOTALL,
            )
            return lambda name: pattern.fullmatch(name) is not None
    raise _invalid(
        f"filter: experiments are searched by name only (name = '...'), not {text!r:.80}"
    )
