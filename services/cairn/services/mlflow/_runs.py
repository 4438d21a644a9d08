"""MLflow's runs, params, tags and metrics: Cairn's runs, properties, tags and metric points."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from cairn.errors import (
    InvalidInput,
    InvalidTransition,
    NotFound,
)
from cairn.proto.commands import (
    Accepted,
    AddRunProperties,
    CancelRun,
    Command,
    CompleteRun,
    CreateRun,
    FailRun,
    GetRun,
    HeartbeatRun,
    ListRuns,
    SetRunTags,
    StartRun,
)
from cairn.proto.metrics import GetMetrics, LogMetrics, MetricHistory, MetricPoint
from cairn.services.mlflow._experiments import (
    _experiment_by_id,
)
from cairn.services.mlflow._search import (
    STATUS_FROM_CAIRN,
    ms_of_iso,
    to_cairn_filter,
    to_cairn_order,
)
from cairn.services.mlflow._tracker import (
    _RENEW_S,
    LIFECYCLE_TAG,
    PARENT_TAG,
    RUN_NAME_TAG,
    RUN_SILENCE_S,
    Tracker,
    _id,
    _invalid,
    _not_found,
    _number,
    _pairs,
    _run_id,
    _text,
)

__all__ = [
    "metrics_get_history",
    "runs_create",
    "runs_delete",
    "runs_get",
    "runs_log_batch",
    "runs_log_metric",
    "runs_log_param",
    "runs_restore",
    "runs_search",
    "runs_set_tag",
    "runs_update",
]

# -- runs -----------------------------------------------------------------------------------


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


def _point(metric: Any) -> MetricPoint:
    if not isinstance(metric, dict):
        raise _invalid("metrics: each is an object with a key and a value")
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


def _points(metrics: list[Any]) -> list[MetricPoint]:
    """The points of a batch. What ``mlflow`` sends (a non-empty key, a finite float, a
    timestamp in milliseconds, a step) is converted inline, with no call per point: a batch of
    1,000 metrics is one pass over the list. Anything else (a value as text, an integer, NaN,
    a missing or zero timestamp, a bad key) goes through :func:`_point`, which converts or
    refuses it."""
    out: list[MetricPoint] = []
    append = out.append
    for m in metrics:
        if type(m) is dict:
            key, value = m.get("key"), m.get("value")
            stamp, step = m.get("timestamp"), m.get("step")
            if (
                type(key) is str
                and key
                and type(value) is float
                and math.isfinite(value)
                and type(stamp) is int
                and stamp > 0
                and (step is None or type(step) is int)
            ):
                append(MetricPoint(key, "scalar", value, step or 0, stamp / 1000))
                continue
        append(_point(m))
    return out


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
        points = _points(metrics)
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


class _HistoryMetric(msgspec.Struct):
    """One point of a metric's history as MLflow's ``Metric`` (a struct: cheaper to make and
    to encode than a dict, for histories of many thousand points)."""

    key: str
    #: a number; NaN and the infinities as proto3's JSON writes them ("NaN", "Infinity",
    #: "-Infinity"), which MLflow's client reads back as floats
    value: float | str
    timestamp: int
    step: int


def _history_entry(key: str, point: Any) -> _HistoryMetric | None:
    """One point of a history as MLflow's metric; None for a value that is no number
    (MLflow's metrics are numbers only)."""
    step, when, value = point[:3]
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return _HistoryMetric(key, value, int(when * 1000), step)
    number = _number(value)
    if number is None:
        return None
    if not math.isfinite(number):
        text = "NaN" if math.isnan(number) else "Infinity" if number > 0 else "-Infinity"
        return _HistoryMetric(key, text, int(when * 1000), step)
    return _HistoryMetric(key, number, int(when * 1000), step)


async def metrics_get_history(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """The whole history of a metric. The run is looked up only when it has no points of
    that metric (to tell an unknown run from an empty history): points are stored only for
    a run that exists, and runs are never removed."""
    run_id = _run_id(req)
    key = _text(req, "metric_key")
    if req.get("page_token"):
        raise _invalid("page_token: the whole history is on the first page")
    points: list[Any] = []
    after: Any = None
    while True:
        reply = await t.ask(MetricHistory(run_id=run_id, name=key, after=after), metrics=True)
        points.extend(reply.data["points"])
        if reply.data["next"] is None:
            break
        after = tuple(reply.data["next"])
    if not points:
        await _get_run(t, run_id)
    # floats, the common case, inline; anything else through _history_entry
    metrics = [
        _HistoryMetric(key, p[2], int(p[1] * 1000), p[0])
        if type(p[2]) is float and math.isfinite(p[2])
        else _history_entry(key, p)
        for p in points
    ]
    return {"metrics": [m for m in metrics if m is not None]}
