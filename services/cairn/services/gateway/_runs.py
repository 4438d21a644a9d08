"""The studio's experiment, run and compare pages, and what they read (shared with the JSON
API, :mod:`._api`): every value comes from a query asked as the signed-in user.

The runs of an experiment are read through one function, :func:`fetch_runs`, whose view
(filter, order, page size, cursor) is what the page's query string says.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, get
from litestar.params import FromPath, FromQuery
from litestar.response import Stream, Template

from cairn.data import blob_chunks
from cairn.errors import InvalidInput, NotFound
from cairn.proto import subjects
from cairn.proto.artifacts import GetRunFile, ListRunFiles
from cairn.proto.assets import ListAssets
from cairn.proto.commands import GetRun, ListRuns
from cairn.proto.jobs import DatasetRuns, GetJob
from cairn.proto.metrics import GetMetrics
from cairn.proto.paths import validate_run_path
from cairn.proto.pipelines import GetPipeline
from cairn.proto.registry import ListModels, ModelLineage
from cairn.proto.sweeps import GetSweep
from cairn.rpc import Client
from cairn.services.gateway._app import ask
from cairn.services.gateway._auth import principal_of
from cairn.services.gateway._format import duration, number, short_time, size, timeline
from cairn.services.gateway._pages import page

__all__ = [
    "COMPARE_MAX",
    "PAGE_SIZE",
    "RUN_PAGES",
    "RunsPage",
    "RunsView",
    "compare_data",
    "fetch_runs",
    "metric_names",
    "run_files",
    "run_record",
]

#: runs on one page of an experiment's table
PAGE_SIZE = 50
#: how many runs a comparison takes at most (and at least 2)
COMPARE_MAX = 10
#: the metric columns an experiment's table shows at most
METRIC_COLUMNS = 8
_TERMINAL = {"Completed", "Failed", "Canceled"}


@dataclass(frozen=True)
class RunsView:
    """What a runs table shows: ``filter`` and ``order_by`` in the grammar of ``run.list``
    (``metrics.loss < 0.2 AND tags.team = 'a'``; ``metrics.loss.min ASC``), a page size and
    the cursor of the page."""

    filter: str = ""
    order_by: tuple[str, ...] = ()
    limit: int = PAGE_SIZE
    cursor: str | None = None


@dataclass(frozen=True)
class RunsPage:
    runs: list[dict[str, Any]]
    next_cursor: str | None
    remaining: int | None = None
    #: metric name -> run id -> {"last", "min", "max"}
    metrics: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


async def fetch_runs(
    request: Request[Any, Any, Any],
    workspace: str,
    experiment: str,
    view: RunsView,
    metrics: tuple[str, ...] = (),
) -> RunsPage:
    """One page of ``experiment``'s runs as ``view`` says, through ``run.list`` (filtered,
    ordered and paged by the read model); each run carries the summaries of ``metrics``."""
    query = ListRuns(
        experiment_name=experiment,
        limit=view.limit,
        filter=view.filter,
        order_by=view.order_by,
        cursor=view.cursor,
        metrics=metrics,
    )
    data = (await ask(request, workspace, query)).data
    return RunsPage(
        runs=data["runs"], next_cursor=data["next_cursor"], remaining=data.get("remaining")
    )


def parse_order(text: str | None) -> tuple[str, ...]:
    """``order`` of a query string: keys separated by commas (``metrics.loss.min ASC``)."""
    return tuple(k.strip() for k in (text or "").split(",") if k.strip())


async def metric_names(request: Request[Any, Any, Any], workspace: str, run_id: str) -> list[str]:
    """The names of ``run_id``'s scalar metrics, sorted."""
    found = (await ask(request, workspace, GetMetrics(run_id=run_id))).data
    return sorted(name for name, entry in found.items() if entry.get("kind") == "scalar")


async def _experiment_metrics(
    request: Request[Any, Any, Any],
    workspace: str,
    experiment: str,
    view: RunsView,
    runs: list[dict[str, Any]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """The last, min and max of the experiment's metrics (those of its newest runs on the
    page, at most ``METRIC_COLUMNS``) for the runs of the page: metric name -> run id ->
    summary."""
    found = await asyncio.gather(*(metric_names(request, workspace, r["run_id"]) for r in runs[:3]))
    names = tuple(sorted({n for each in found for n in each})[:METRIC_COLUMNS])
    if not names:
        return {}
    page = await fetch_runs(request, workspace, experiment, view, metrics=names)
    return {
        name: {
            r["run_id"]: r["metrics"][name]
            for r in page.runs
            if r["metrics"][name]["last"] is not None
        }
        for name in names
    }


async def run_record(
    request: Request[Any, Any, Any], workspace: str, run_id: str
) -> dict[str, Any]:
    subjects.validate_token(run_id, "run id")
    return dict((await ask(request, workspace, GetRun(run_id=run_id))).data)


async def run_files(
    request: Request[Any, Any, Any], workspace: str, run_id: str, prefix: str = ""
) -> list[dict[str, Any]]:
    return list((await ask(request, workspace, ListRunFiles(run_id=run_id, prefix=prefix))).data)


async def compare_data(
    request: Request[Any, Any, Any], workspace: str, run_ids: list[str]
) -> dict[str, Any]:
    """The runs, the union of their scalar metrics (sorted) and each run's summary of each:
    what a comparison shows (its charts read the histories)."""
    if not COMPARE_MAX >= len(run_ids) >= 2:
        raise InvalidInput(f"compare takes 2 to {COMPARE_MAX} runs, not {len(run_ids)}")
    if len(set(run_ids)) != len(run_ids):
        raise InvalidInput("compare takes each run once")
    runs = await asyncio.gather(*(run_record(request, workspace, r) for r in run_ids))
    names: list[str] = []
    summaries: dict[str, dict[str, Any]] = {}
    for run in runs:
        found = (await ask(request, workspace, GetMetrics(run_id=run["run_id"]))).data
        summaries[run["run_id"]] = {}
        for name, entry in found.items():
            if entry.get("kind") != "scalar":
                continue
            if name not in names:
                names.append(name)
            value = entry.get("value")
            summaries[run["run_id"]][name] = value[-1] if isinstance(value, list) else value
    return {"runs": runs, "metrics": sorted(names), "last": summaries}


def _link(base: str, **params: str | None) -> str:
    query = {k: v for k, v in params.items() if v}
    return base + ("?" + urlencode(query) if query else "")


def _sort_links(base: str, view: RunsView, key: str) -> dict[str, str]:
    """For a column: the link that sorts by it (descending when it is sorted ascending now)
    and the arrow that shows how it is sorted."""
    current = view.order_by[0] if view.order_by else ""
    asc = current in (key, f"{key} ASC")
    desc = current == f"{key} DESC"
    order = f"{key} DESC" if asc else f"{key} ASC"
    return {
        "href": _link(base, filter=view.filter or None, order=order),
        "arrow": "▲" if asc else ("▼" if desc else ""),
    }


# -- pages -----------------------------------------------------------------------------------


@get("/w/{workspace:str}/experiments/{name:path}")
async def experiment_page(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    name: FromPath[str],
    filter: FromQuery[str] = "",
    order: FromQuery[str] = "",
    cursor: FromQuery[str] = "",
) -> Template:
    name = name.removeprefix("/")  # a path parameter: experiment names may hold slashes
    view = RunsView(filter=filter.strip(), order_by=parse_order(order), cursor=cursor or None)
    error = ""
    try:
        runs_page = await fetch_runs(request, workspace, name, view)
    except InvalidInput as exc:
        error, runs_page = exc.message, RunsPage(runs=[], next_cursor=None)
    metrics = await _experiment_metrics(request, workspace, name, view, runs_page.runs)
    base = f"/w/{workspace}/experiments/{quote(name)}"
    columns = {
        key: _sort_links(base, view, key) for key in ("name", "status", "created_at", "start_time")
    }
    metric_links = {
        metric: {
            s: _sort_links(base, view, f"metrics.{metric}.{s}") for s in ("last", "min", "max")
        }
        for metric in metrics
    }
    now = datetime.now(UTC)
    rows = [
        {
            **run,
            "created": short_time(run.get("created_at")),
            "duration": duration(run, now),
            "values": {m: number(metrics[m].get(run["run_id"], {}).get("last")) for m in metrics},
        }
        for run in runs_page.runs
    ]
    next_href = (
        _link(base, filter=view.filter or None, order=order or None, cursor=runs_page.next_cursor)
        if runs_page.next_cursor
        else ""
    )
    return await page(
        request,
        workspace,
        "experiment.html",
        nav="experiments",
        experiment=name,
        rows=rows,
        metrics=list(metrics),
        columns=columns,
        metric_links=metric_links,
        view=view,
        order=order,
        error=error,
        next_href=next_href,
        first_href=_link(base, filter=view.filter or None, order=order or None)
        if view.cursor
        else "",
        compare_max=COMPARE_MAX,
    )


async def _optional(coro: Any) -> Any:
    """A query's data, or None when what it asks for does not exist (an interactive run has
    no job)."""
    try:
        return (await coro).data
    except NotFound:
        return None


async def _lineage(
    request: Request[Any, Any, Any], workspace: str, run_id: str
) -> list[dict[str, Any]]:
    """The model versions registered from the run, each with the datasets and environment
    the registry recorded for it."""
    models = [
        m for m in (await ask(request, workspace, ListModels())).data if m["run_id"] == run_id
    ]
    out = []
    for m in models:
        lineage = await ask(
            request, workspace, ModelLineage(name=m["name"], version=int(m["version"]))
        )
        out.append(
            {
                **m,
                "datasets": lineage.data.get("datasets") or [],
                "environment": lineage.data.get("environment"),
            }
        )
    return out


#: the most datasets a run page looks through for those its job read
DATASETS_SCANNED = 50


async def _datasets_read(
    request: Request[Any, Any, Any], workspace: str, run_id: str
) -> list[dict[str, Any]]:
    """The dataset versions the run's job read (``job.dataset_runs`` of each dataset of the
    workspace, the first ``DATASETS_SCANNED`` by name)."""
    datasets = (await ask(request, workspace, ListAssets(asset_kind="dataset"))).data
    names = [d["name"] for d in datasets if not d.get("builtin")][:DATASETS_SCANNED]
    replies = await asyncio.gather(
        *(ask(request, workspace, DatasetRuns(dataset=n)) for n in names)
    )
    return [
        {"name": name, "version": row["version"]}
        for name, reply in zip(names, replies, strict=True)
        for row in reply.data
        if row["run_id"] == run_id
    ]


@get("/w/{workspace:str}/runs/{run_id:str}")
async def run_page(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    run_id: FromPath[str],
    prefix: FromQuery[str] = "",
) -> Template:
    run = await run_record(request, workspace, run_id)
    job, files, children, names, models, pipeline, sweep = await asyncio.gather(
        _optional(ask(request, workspace, GetJob(run_id=run_id))),
        run_files(request, workspace, run_id, prefix),
        ask(request, workspace, ListRuns(parent_run_id=run_id, limit=200)),
        metric_names(request, workspace, run_id),
        _lineage(request, workspace, run_id),
        _optional(ask(request, workspace, GetPipeline(run_id=run_id))),
        _optional(ask(request, workspace, GetSweep(run_id=run_id))),
    )
    datasets = await _datasets_read(request, workspace, run_id) if job is not None else []
    for f in files:
        f["size_text"] = size(int(f.get("size") or 0))
    return await page(
        request,
        workspace,
        "run.html",
        nav="experiments",
        run=run,
        job=job,
        timeline=timeline(run, job),
        duration=duration(run),
        created=short_time(run.get("created_at")),
        files=files,
        prefix=prefix,
        children=[
            {**c, "created": short_time(c.get("created_at")), "duration": duration(c)}
            for c in children.data["runs"]
        ],
        metrics=names,
        models=models,
        datasets=datasets,
        pipeline=pipeline,
        sweep=sweep,
        live=run.get("status") not in _TERMINAL,
    )


def _run_ids(runs: str, run: list[str]) -> list[str]:
    ids = [r.strip() for r in runs.split(",") if r.strip()] + [r for r in run if r.strip()]
    for r in ids:
        subjects.validate_token(r, "run id")
    return ids


@get("/w/{workspace:str}/compare")
async def compare_page(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    runs: FromQuery[str] = "",
    run: FromQuery[list[str] | None] = None,
) -> Template:
    """``?runs=a,b`` (a link) or ``?run=a&run=b`` (the experiment table's checkboxes)."""
    data = await compare_data(request, workspace, _run_ids(runs, run or []))
    rows = []
    keys = sorted({k for r in data["runs"] for k in r.get("properties", {})})
    for key in keys:
        values = [r.get("properties", {}).get(key) for r in data["runs"]]
        rows.append(
            {"key": key, "kind": "parameter", "values": values, "differ": len(set(values)) > 1}
        )
    tag_keys = sorted({k for r in data["runs"] for k in r.get("tags", {})})
    for key in tag_keys:
        values = [r.get("tags", {}).get(key) for r in data["runs"]]
        rows.append({"key": key, "kind": "tag", "values": values, "differ": len(set(values)) > 1})
    for name in data["metrics"]:
        raw = [data["last"][r["run_id"]].get(name) for r in data["runs"]]
        rows.append(
            {
                "key": name,
                "kind": "metric (last)",
                "values": [number(v) if v is not None else None for v in raw],
                "differ": len({repr(v) for v in raw}) > 1,
            }
        )
    return await page(
        request,
        workspace,
        "compare.html",
        nav="experiments",
        runs=data["runs"],
        metrics=data["metrics"],
        rows=rows,
    )


@get("/w/{workspace:str}/runs/{run_id:str}/file", media_type="application/octet-stream")
async def download_run_file(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    run_id: FromPath[str],
    path: FromQuery[str],
) -> Stream:
    """A run file as an attachment, streamed from the artifact service as it is read."""
    return await file_stream(request, workspace, run_id, path)


async def file_stream(
    request: Request[Any, Any, Any], workspace: str, run_id: str, path: str
) -> Stream:
    subjects.validate_token(run_id, "run id")
    validate_run_path(path)
    info = (await ask(request, workspace, GetRunFile(run_id=run_id, path=path))).data
    client = Client(principal_of(request).conn, workspace)
    name = path.rsplit("/", 1)[-1]
    quoted = quote(name, safe="")
    return Stream(
        blob_chunks(client, info["digest"], int(info["size"])),
        media_type="application/octet-stream",
        headers={
            "content-disposition": f"attachment; filename*=UTF-8''{quoted}",
            "content-length": str(int(info["size"])),
            "x-content-type-options": "nosniff",
        },
    )


RUN_PAGES: list[Any] = [experiment_page, run_page, compare_page, download_run_file]
