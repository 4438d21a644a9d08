"""MLflow's tracking REST API (the subset ``mlflow`` 2.x and 3.x clients use), answered with
Cairn's commands and queries through a :class:`Tracker`: the gateway's is the caller's own
connection, an agent's is its job's gate. The mapping:

=======================  =================================================================
MLflow                   Cairn
=======================  =================================================================
experiment (id, name)    experiment (its ``experiment_id``, its name); id ``0`` is
                         ``Default``
run                      run (``run_id``); ``run_name`` is the display name
param                    run property (write-once, as MLflow's params are)
tag                      run tag (``mlflow.runName`` is the display name)
metric                   scalar metric point (``timestamp`` ms -> time s, ``step``)
artifact                 run file (``mlflow-artifacts:/<exp>/<run>/artifacts/<path>``)
logged model (3.x)       a folder of its source run's files, named after the model; its id
                         carries the run and the name, so nothing is stored for it
dataset input            a run tag ``mlflow.input.<name>`` (name, digest, source type)
deleted run              a run tag ``mlflow.lifecycle_stage=deleted`` (the log keeps the
                         run); active-only searches leave such runs out
=======================  =================================================================

Errors are MLflow's: ``{"error_code", "message"}`` with the HTTP status of the kind
(:func:`error_body`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cairn.errors import (
    AlreadyExists,
    CairnError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from cairn.proto.commands import (
    Accepted,
    AddRunProperties,
    CancelRun,
    Command,
    CompleteRun,
    CreateExperiment,
    CreateRun,
    FailRun,
    GetRun,
    HeartbeatRun,
    ListExperiments,
    ListRuns,
    Query,
    QueryResult,
    SetRunTags,
    StartRun,
)
from cairn.proto.metrics import GetMetrics, LogMetrics, MetricHistory, MetricPoint
from cairn.rpc import Client
from cairn.services.mlflow._search import (
    STATUS_FROM_CAIRN,
    ms_of_iso,
    to_cairn_filter,
    to_cairn_order,
)

__all__ = ["ROUTES", "MlflowError", "Tracker", "call", "error_body"]

DEFAULT_EXPERIMENT = "Default"
#: how long a run started here may stay silent before Cairn fails it as lost (MLflow clients
#: send no heartbeats; every request about the run renews it, at most once a minute)
RUN_SILENCE_S = 3600.0
_RENEW_S = 60.0
LIFECYCLE_TAG = "mlflow.lifecycle_stage"
RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"


class MlflowError(Exception):
    """An error in MLflow's terms: its ``error_code`` and the HTTP status it goes with."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _not_found(message: str) -> MlflowError:
    return MlflowError("RESOURCE_DOES_NOT_EXIST", message, 404)


def _invalid(message: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", message, 400)


def error_body(exc: Exception) -> tuple[int, dict[str, str]]:
    """(HTTP status, MLflow's error body) of an error raised while answering."""
    if isinstance(exc, MlflowError):
        return exc.status, {"error_code": exc.code, "message": exc.message}
    if isinstance(exc, CairnError):
        for kind, code, status in (
            (NotFound, "RESOURCE_DOES_NOT_EXIST", 404),
            (AlreadyExists, "RESOURCE_ALREADY_EXISTS", 400),
            (Unauthenticated, "UNAUTHENTICATED", 401),
            (PermissionDenied, "PERMISSION_DENIED", 403),
            (InvalidInput, "INVALID_PARAMETER_VALUE", 400),
            (InvalidTransition, "INVALID_STATE", 400),
            (Unavailable, "TEMPORARILY_UNAVAILABLE", 503),
        ):
            if isinstance(exc, kind):
                return status, {"error_code": code, "message": exc.message}
        return 409, {"error_code": "INVALID_STATE", "message": exc.message}
    raise exc


@dataclass
class Tracker:
    """Who answers: a workspace's client (the caller's connection at the gateway, the job's
    gate at an agent) and what its caller wrote last (read-your-writes over EVENTS and
    METRICS). ``job_run``: at an agent, the job's own run — the default parent of the runs
    it creates, and one its agent ends (a terminal status for it is not forwarded)."""

    client: Client
    events_seen: dict[str, int] = field(default_factory=dict)
    metrics_seen: dict[str, int] = field(default_factory=dict)
    job_run: str | None = None
    attempt: int | None = None
    job_experiment: str | None = None
    #: when each run was last said to be alive (runs this process started, bounded)
    renewed: dict[str, float] = field(default_factory=dict)

    @property
    def workspace(self) -> str:
        return self.client.workspace

    async def ask(self, q: Query, *, metrics: bool = False) -> QueryResult:
        seen = (self.metrics_seen if metrics else self.events_seen).get(self.workspace, 0)
        if seen > q.min_seq:
            q = msgspec.structs.replace(q, min_seq=seen)
        if isinstance(q, ListRuns):
            q = msgspec.structs.replace(q, metrics_min_seq=self.metrics_seen.get(self.workspace, 0))
        return await self.client.ask(q)

    async def send(self, cmd: Command) -> Accepted:
        accepted = await self.client.send(cmd)
        seen = self.metrics_seen if isinstance(cmd, LogMetrics) else self.events_seen
        seen[self.workspace] = max(seen.get(self.workspace, 0), accepted.seq)
        return accepted


def _id() -> str:
    return uuid.uuid4().hex


# -- experiments ----------------------------------------------------------------------------


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
        kind, _, value = _name_filter(text)
        if kind == "=":
            rows = [r for r in rows if r["name"] == value]
        else:
            rows = [r for r in rows if _like(r["name"], value)]
    if req.get("page_token"):
        raise _invalid("page_token: every experiment is on the first page")
    return {"experiments": [_experiment(r) for r in rows]}


def _name_filter(text: str) -> tuple[str, str, str]:
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
            return op.strip().upper(), "", value[1:-1]
    raise _invalid(
        f"filter: experiments are searched by name only (name = '...'), not {text!r:.80}"
    )


def _like(value: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(value, pattern.replace("%", "*").replace("_", "?"))


# -- runs -----------------------------------------------------------------------------------


def _text(req: dict[str, Any], key: str, *alias: str) -> str:
    for name in (key, *alias):
        value = req.get(name)
        if isinstance(value, str) and value:
            return value
    raise _invalid(f"missing value for required parameter '{key}'")


def _run_id(req: dict[str, Any]) -> str:
    return _text(req, "run_id", "run_uuid")


def _pairs(items: Any, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise _invalid(f"{what}: each needs a key")
        out[item["key"]] = "" if item.get("value") is None else str(item["value"])
    return out


async def _renew(t: Tracker, run_id: str, *, force: bool = False) -> None:
    """Keep an open run that this API started from being failed as lost: MLflow clients send
    no heartbeats, so each request about the run stands for one (at most once a minute)."""
    if run_id == t.job_run:
        return
    now = time.monotonic()
    if not force and now - t.renewed.get(run_id, -_RENEW_S) < _RENEW_S:
        return
    if len(t.renewed) > 10_000:
        t.renewed.clear()
    t.renewed[run_id] = now
    try:
        await t.send(HeartbeatRun(command_id=_id(), run_id=run_id, every_s=RUN_SILENCE_S))
    except (InvalidInput, InvalidTransition):
        pass  # a job's run, or one that has ended: nothing to keep alive


def _run_info(run: dict[str, Any]) -> dict[str, Any]:
    tags = run.get("tags") or {}
    info = {
        "run_id": run["run_id"],
        "run_uuid": run["run_id"],
        "run_name": run.get("display_name") or tags.get(RUN_NAME_TAG) or run["run_id"],
        "experiment_id": run["experiment_id"],
        "user_id": run.get("created_by") or "",
        "status": STATUS_FROM_CAIRN.get(run.get("status") or "", "RUNNING"),
        "start_time": ms_of_iso(run.get("start_time")) or ms_of_iso(run.get("created_at")),
        "artifact_uri": f"mlflow-artifacts:/{run['experiment_id']}/{run['run_id']}/artifacts",
        "lifecycle_stage": tags.get(LIFECYCLE_TAG, "active"),
    }
    end = ms_of_iso(run.get("end_time"))
    if end is not None:
        info["end_time"] = end
    return info


def _run(run: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    tags = dict(run.get("tags") or {})
    tags.pop(LIFECYCLE_TAG, None)
    name = run.get("display_name")
    if name and RUN_NAME_TAG not in tags:
        tags[RUN_NAME_TAG] = name
    if run.get("parent_run_id") and PARENT_TAG not in tags:
        tags[PARENT_TAG] = run["parent_run_id"]
    return {
        "info": _run_info(run),
        "data": {
            "metrics": [
                {"key": k, "value": v, "timestamp": 0, "step": 0} for k, v in metrics.items()
            ],
            "params": [{"key": k, "value": v} for k, v in (run.get("properties") or {}).items()],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        },
        "inputs": {},
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


async def _latest_metrics(t: Tracker, run_id: str) -> dict[str, float]:
    found = (await t.ask(GetMetrics(run_id=run_id), metrics=True)).data
    out: dict[str, float] = {}
    long: list[str] = []
    for name, entry in found.items():
        if entry.get("kind") != "scalar":
            continue
        if "value" not in entry:
            long.append(name)
            continue
        value = entry["value"]
        last = _number(value[-1] if isinstance(value, list) else value)
        if last is not None:
            out[name] = last
    quoted = run_id.replace("'", "''")
    for i in range(0, len(long), 32):  # long series: their summaries
        page = await t.ask(
            ListRuns(filter=f"run_id = '{quoted}'", metrics=tuple(long[i : i + 32]), limit=1)
        )
        for run in page.data["runs"]:
            for name, summary in (run.get("metrics") or {}).items():
                if (last := _number(summary.get("last"))) is not None:
                    out[name] = last
    return out


async def _get_run(t: Tracker, run_id: str) -> dict[str, Any]:
    try:
        run: dict[str, Any] = (await t.ask(GetRun(run_id=run_id))).data
    except NotFound:
        raise _not_found(f"run {run_id!r:.80} does not exist") from None
    return run


async def runs_get(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    run_id = _run_id(req)
    run = await _get_run(t, run_id)
    return {"run": _run(run, await _latest_metrics(t, run_id))}


async def runs_create(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    experiment = await _experiment_by_id(t, str(req.get("experiment_id") or "0"))
    tags = _pairs(req.get("tags"), "tags")
    name = req.get("run_name") or tags.get(RUN_NAME_TAG) or None
    parent = tags.get(PARENT_TAG) or t.job_run
    run_id = _id()
    await t.send(
        CreateRun(
            command_id=_id(),
            run_id=run_id,
            experiment_name=experiment["name"],
            display_name=name,
            parent_run_id=parent,
        )
    )
    await t.send(StartRun(command_id=_id(), run_id=run_id))
    await _renew(t, run_id, force=True)
    if tags:
        await t.send(SetRunTags(command_id=_id(), run_id=run_id, tags=tags))
    return {"run": _run(await _get_run(t, run_id), {})}


_TERMINAL: dict[str, Callable[[str], Command]] = {
    "FINISHED": lambda r: CompleteRun(command_id=_id(), run_id=r),
    "FAILED": lambda r: FailRun(command_id=_id(), run_id=r, error="failed (MLflow client)"),
    "KILLED": lambda r: CancelRun(command_id=_id(), run_id=r, reason="killed (MLflow client)"),
}


async def runs_update(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """A new status ends the run (the job's own run excepted: its agent ends it from the
    script's exit code, so the status is answered as it stands); a new name is the
    ``mlflow.runName`` tag."""
    run_id = _run_id(req)
    status = req.get("status")
    if req.get("run_name"):
        await t.send(
            SetRunTags(command_id=_id(), run_id=run_id, tags={RUN_NAME_TAG: req["run_name"]})
        )
    if status not in (None, "", "RUNNING") and run_id != t.job_run:
        make = _TERMINAL.get(str(status))
        if make is None:
            raise _invalid(f"status: {status!r:.40} is not one of {sorted(_TERMINAL)}")
        run = await _get_run(t, run_id)
        if STATUS_FROM_CAIRN.get(run["status"]) != status:
            await t.send(make(run_id))
    elif status == "RUNNING":
        await _renew(t, run_id)
    return {"run_info": _run_info(await _get_run(t, run_id))}


async def runs_delete(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    run_id = _run_id(req)
    await _get_run(t, run_id)
    await t.send(SetRunTags(command_id=_id(), run_id=run_id, tags={LIFECYCLE_TAG: "deleted"}))
    return {}


async def runs_restore(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    run_id = _run_id(req)
    await t.send(SetRunTags(command_id=_id(), run_id=run_id, tags={LIFECYCLE_TAG: "active"}))
    return {}


def _point(metric: dict[str, Any]) -> MetricPoint:
    key = metric.get("key")
    if not isinstance(key, str) or not key:
        raise _invalid("metrics: each needs a key")
    value = metric.get("value")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _invalid(f"metric {key!r:.80}: value {value!r:.40} is not a number") from None
    number = _number(value)
    if number is None:
        raise _invalid(f"metric {key!r:.80}: value {value!r:.40} is not a number")
    stored: Any = number
    if math.isnan(number):
        stored = "NaN"
    elif math.isinf(number):
        stored = "Infinity" if number > 0 else "-Infinity"
    stamp = metric.get("timestamp")
    when = float(stamp) / 1000 if isinstance(stamp, (int, float, str)) and stamp != "" else 0.0
    return MetricPoint(key, "scalar", stored, int(metric.get("step") or 0), when or time.time())


async def _log(
    t: Tracker,
    run_id: str,
    metrics: list[Any] | None = None,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    sends: list[Awaitable[Accepted]] = []
    if metrics:
        attempt = t.attempt if run_id == t.job_run else None
        points = [_point(m) for m in metrics]
        sends.append(
            t.send(LogMetrics(command_id=_id(), run_id=run_id, points=points, attempt=attempt))
        )
    if params:
        sends.append(t.send(AddRunProperties(command_id=_id(), run_id=run_id, properties=params)))
    if tags:
        sends.append(t.send(SetRunTags(command_id=_id(), run_id=run_id, tags=tags)))
    await asyncio.gather(*sends, _renew(t, run_id))


async def runs_log_metric(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    await _log(t, _run_id(req), metrics=[req])
    return {}


async def runs_log_param(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    await _log(t, _run_id(req), params=_pairs([req], "params"))
    return {}


async def runs_set_tag(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    await _log(t, _run_id(req), tags=_pairs([req], "tags"))
    return {}


async def runs_log_batch(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    metrics = req.get("metrics") or []
    if not isinstance(metrics, list):
        raise _invalid("metrics: a list")
    await _log(
        t,
        _run_id(req),
        metrics=metrics,
        params=_pairs(req.get("params"), "params"),
        tags=_pairs(req.get("tags"), "tags"),
    )
    return {}


async def runs_log_inputs(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """Each dataset input becomes a tag ``mlflow.input.<name>``: its name, digest, source
    type and context (the schema and profile stay with the client)."""
    tags: dict[str, str] = {}
    for item in req.get("datasets") or ():
        dataset = (item or {}).get("dataset") or {}
        name = str(dataset.get("name") or dataset.get("digest") or "dataset")
        context = {x.get("key"): x.get("value") for x in (item.get("tags") or ())}
        record = {
            "name": name,
            "digest": dataset.get("digest"),
            "source_type": dataset.get("source_type"),
            "context": context.get("mlflow.data.context"),
        }
        tags[f"mlflow.input.{name}"[:255]] = msgspec.json.encode(record).decode()[:5000]
    if tags:
        await _log(t, _run_id(req), tags=tags)
    return {}


async def runs_log_outputs(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """A logged model as the run's output: a tag ``mlflow.output.<model id>`` with its step."""
    tags = {
        f"mlflow.output.{m.get('model_id')}"[:255]: str(m.get("step") or 0)
        for m in req.get("models") or ()
    }
    if tags:
        await _log(t, _run_id(req), tags=tags)
    return {}


async def runs_search(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    ids = req.get("experiment_ids") or []
    if not isinstance(ids, list) or len(ids) != 1:
        raise _invalid("experiment_ids: search one experiment at a time")
    experiment = await _experiment_by_id(t, str(ids[0]))
    text = str(req.get("filter") or "").strip()
    cairn_filter = to_cairn_filter(text) if text else ""
    view = str(req.get("run_view_type") or "ACTIVE_ONLY")
    lifecycle = {
        "ACTIVE_ONLY": f"(tags.`{LIFECYCLE_TAG}` IS NULL OR tags.`{LIFECYCLE_TAG}` = 'active')",
        "DELETED_ONLY": f"tags.`{LIFECYCLE_TAG}` = 'deleted'",
        "ALL": "",
    }.get(view)
    if lifecycle is None:
        raise _invalid(f"run_view_type: {view!r:.40} (ACTIVE_ONLY, DELETED_ONLY, ALL)")
    if lifecycle:
        cairn_filter = f"({cairn_filter}) AND {lifecycle}" if cairn_filter else lifecycle
    order = req.get("order_by") or []
    limit = int(req.get("max_results") or 1000)
    if limit < 1:
        raise _invalid("max_results: at least 1")
    page = await t.ask(
        ListRuns(
            experiment_name=experiment["name"],
            filter=cairn_filter,
            order_by=to_cairn_order(order) or ("start_time DESC",),
            limit=min(limit, 1000),
            cursor=req.get("page_token") or None,
        )
    )
    runs = page.data["runs"]
    metrics = await asyncio.gather(*(_latest_metrics(t, r["run_id"]) for r in runs))
    out: dict[str, Any] = {"runs": [_run(r, m) for r, m in zip(runs, metrics, strict=True)]}
    if page.data.get("next_cursor"):
        out["next_page_token"] = page.data["next_cursor"]
    return out


async def metrics_get_history(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    run_id = _run_id(req)
    key = _text(req, "metric_key")
    if req.get("page_token"):
        raise _invalid("page_token: the whole history is on the first page")
    await _get_run(t, run_id)
    points: list[Any] = []
    after: Any = None
    while True:
        reply = await t.ask(MetricHistory(run_id=run_id, name=key, after=after), metrics=True)
        points.extend(reply.data["points"])
        if reply.data["next"] is None:
            break
        after = tuple(reply.data["next"])
    metrics = []
    for step, when, value in (p[:3] for p in points):
        number = _number(value)
        if number is None and isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
            number = float(value.replace("Infinity", "inf"))
        if number is not None:
            metrics.append(
                {"key": key, "value": number, "timestamp": int(when * 1000), "step": step}
            )
    return {"metrics": metrics}


# -- logged models (MLflow 3) ----------------------------------------------------------------


def _model_id(run_id: str, name: str) -> str:
    encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return f"m-{run_id}-{encoded}"


def _model_of(model_id: str) -> tuple[str, str]:
    try:
        _, run_id, encoded = model_id.split("-", 2)
        name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _not_found(f"no logged model {model_id!r:.80}") from None
    return run_id, name


def _logged_model(run: dict[str, Any], name: str, status: str = "READY") -> dict[str, Any]:
    run_id, experiment = run["run_id"], run["experiment_id"]
    created = ms_of_iso(run.get("created_at")) or 0
    return {
        "model": {
            "info": {
                "model_id": _model_id(run_id, name),
                "experiment_id": experiment,
                "name": name,
                "artifact_uri": f"mlflow-artifacts:/{experiment}/{run_id}/artifacts/{name}",
                "creation_timestamp_ms": created,
                "last_updated_timestamp_ms": created,
                "status": status,
                "source_run_id": run_id,
                "tags": [],
            },
            "data": {"params": [], "metrics": []},
        }
    }


async def logged_models_create(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """A logged model is a folder of its source run (``model/`` by default): its files are
    the run's files, seen by Cairn's SDK and the studio like any other."""
    run_id = req.get("source_run_id")
    if not isinstance(run_id, str) or not run_id:
        raise _invalid("source_run_id: a logged model here belongs to a run (start one first)")
    name = str(req.get("name") or "model")
    run = await _get_run(t, run_id)
    return _logged_model(run, name, "PENDING")


async def logged_models_get(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    run_id, name = _model_of(_text(req, "model_id"))
    return _logged_model(await _get_run(t, run_id), name)


async def logged_models_finalize(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    return await logged_models_get(t, req)


async def logged_models_search(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """No logged model is listed: each is a folder of its run's files, which the run's
    artifacts list already (``runs:/<run>/<name>`` reads them); listing it again would show
    every file twice. A model's own id still reads it (``models:/<id>``)."""
    return {"models": []}


Handler = Callable[[Tracker, dict[str, Any]], Awaitable[dict[str, Any]]]

#: (method, path after ``/api/2.0/mlflow/``) -> handler
ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "experiments/create"): experiments_create,
    ("GET", "experiments/get"): experiments_get,
    ("GET", "experiments/get-by-name"): experiments_get_by_name,
    ("POST", "experiments/search"): experiments_search,
    ("GET", "experiments/search"): experiments_search,
    ("POST", "runs/create"): runs_create,
    ("GET", "runs/get"): runs_get,
    ("POST", "runs/update"): runs_update,
    ("POST", "runs/delete"): runs_delete,
    ("POST", "runs/restore"): runs_restore,
    ("POST", "runs/search"): runs_search,
    ("POST", "runs/log-metric"): runs_log_metric,
    ("POST", "runs/log-parameter"): runs_log_param,
    ("POST", "runs/set-tag"): runs_set_tag,
    ("POST", "runs/log-batch"): runs_log_batch,
    ("POST", "runs/log-inputs"): runs_log_inputs,
    ("POST", "runs/outputs"): runs_log_outputs,
    ("GET", "metrics/get-history"): metrics_get_history,
    ("POST", "logged-models"): logged_models_create,
    ("POST", "logged-models/search"): logged_models_search,
    ("GET", "logged-models/{model_id}"): logged_models_get,
    ("PATCH", "logged-models/{model_id}"): logged_models_finalize,
}


async def call(t: Tracker, method: str, path: str, req: dict[str, Any]) -> dict[str, Any]:
    """Answer ``method`` on ``path`` (after ``/api/2.0/mlflow/``); an unknown one is
    ``ENDPOINT_NOT_FOUND`` (404) naming it."""
    handler = ROUTES.get((method, path))
    if handler is None and path.startswith("logged-models/") and path.count("/") == 1:
        handler = ROUTES.get((method, "logged-models/{model_id}"))
        req = {**req, "model_id": path.split("/", 1)[1]}
    if handler is None:
        raise MlflowError(
            "ENDPOINT_NOT_FOUND",
            f"{method} /api/2.0/mlflow/{path} is not part of Cairn's MLflow API",
            404,
        )
    return await handler(t, req)
