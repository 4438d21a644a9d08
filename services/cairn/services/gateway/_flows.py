"""The studio's pipeline and sweep pages: a pipeline run's steps as a DAG (status, reuse,
durations, each step's own run), a sweep's trials as a table and a parallel-coordinates chart
of their parameters against the primary metric; both follow the run live.

Each reads one query as the signed-in user (``pipeline.get``, ``sweep.get``). The live stream of
a page long-polls that query (``min_seq`` one past the EVENTS sequence it last saw, as the run
page's ``run`` feed does) and sends the whole view whenever it changed; the page then reads
itself again and swaps the part that is live. Once the pipeline or sweep has ended the stream
sends ``end`` and closes.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from litestar import Request, get
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage, Template

from cairn.errors import CairnError, NotFound, Unavailable
from cairn.proto import subjects
from cairn.proto.commands import GetRun, Query
from cairn.proto.pipelines import GetPipeline
from cairn.proto.sweeps import GetSweep
from cairn.rpc import Client
from cairn.services.gateway._app import ask
from cairn.services.gateway._auth import after_response, principal_of
from cairn.services.gateway._format import number
from cairn.services.gateway._live import LIVE, TERMINAL, WAIT_S
from cairn.services.gateway._pages import page
from cairn.services.gateway._pool import Pool

__all__ = ["FLOW_PAGES", "dag_layout", "flow_links", "parallel_coordinates"]

#: the size of a step's box in the DAG and the gaps between boxes, in pixels
NODE_W, NODE_H, GAP_X, GAP_Y = 220, 60, 64, 18


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    s = float(value)
    if s < 60:
        return f"{s:.1f} s"
    minutes, s = divmod(int(s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {s:02d}s"


def dag_layout(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Boxes and edges of a layered drawing: a step's column is one past the furthest of the
    steps it waits for (its topological level), its row its place in that column. ``upstream``
    names outside the pipeline are left out; a cycle (which the service refuses) cannot loop."""
    names = {s["step"] for s in steps}
    ups = {s["step"]: [u for u in s.get("upstream") or [] if u in names] for s in steps}
    level: dict[str, int] = {}

    def level_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in level:
            before = [level_of(u, seen | {name}) for u in ups[name] if u not in seen]
            level[name] = 1 + max(before, default=-1)
        return level[name]

    columns: dict[int, list[str]] = {}
    for s in steps:
        columns.setdefault(level_of(s["step"]), []).append(s["step"])
    at = {
        name: (col * (NODE_W + GAP_X), row * (NODE_H + GAP_Y))
        for col, column in columns.items()
        for row, name in enumerate(column)
    }
    edges = []
    for name, before in ups.items():
        x2, y2 = at[name][0], at[name][1] + NODE_H / 2
        for u in before:
            x1, y1 = at[u][0] + NODE_W, at[u][1] + NODE_H / 2
            mid = (x1 + x2) / 2
            edges.append(f"M{x1:g},{y1:g} C{mid:g},{y1:g} {mid:g},{y2:g} {x2 - 2:g},{y2:g}")
    rows = max((len(c) for c in columns.values()), default=0)
    return {
        "nodes": [{**s, "x": at[s["step"]][0], "y": at[s["step"]][1]} for s in steps],
        "edges": edges,
        "width": len(columns) * (NODE_W + GAP_X) - GAP_X if columns else 0,
        "height": rows * (NODE_H + GAP_Y) - GAP_Y if rows else 0,
        "node_w": NODE_W,
        "node_h": NODE_H,
    }


def _axis(name: str, values: list[Any]) -> dict[str, Any]:
    """One parallel-coordinates axis: numbers as they are, anything else as categories (their
    texts sorted, placed at 0, 1, ...)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        numbers = [float(v) for v in values]
        finite = [v for v in numbers if math.isfinite(v)]
        return {"label": name, "values": [v if math.isfinite(v) else None for v in numbers]} | (
            {} if finite else {"range": [0, 1]}
        )
    texts = sorted({str(v) for v in values})
    return {
        "label": name,
        "values": [texts.index(str(v)) for v in values],
        "tickvals": list(range(len(texts))),
        "ticktext": texts,
    }


def parallel_coordinates(sweep: dict[str, Any]) -> dict[str, Any]:
    """The chart's data: an axis per parameter, one for the stopped-early mark and one for the
    primary metric (each trial's best), over the trials that reported it."""
    metric = sweep["spec"]["objective"]["primary_metric"]
    shown = [t for t in sweep["trials"] if t.get("best") is not None]
    names = sorted({k for t in shown for k in t["parameters"]})
    axes = [_axis(n, [t["parameters"].get(n, "") for t in shown]) for n in names]
    axes.append(
        {
            "label": "stopped early",
            "values": [1 if t.get("stopped") else 0 for t in shown],
            "tickvals": [0, 1],
            "ticktext": ["no", "yes"],
        }
    )
    axes.append({"label": f"{metric} (best)", "values": [float(t["best"]) for t in shown]})
    return {
        "metric": metric,
        "goal": sweep["spec"]["objective"]["goal"],
        "axes": axes,
        "trials": [t["index"] for t in shown],
    }


def _pipeline_context(view: dict[str, Any]) -> dict[str, Any]:
    steps = [
        {
            **s,
            "duration": _seconds(s.get("duration_s")),
            "reused": bool(s.get("reused_run_id")),
            "started_text": _when(s.get("started_at")),
            # a step still running: the page counts its time from here
            "running_since": s.get("started_at") if s.get("status") == "Running" else None,
        }
        for s in view["steps"]
    ]
    return {
        "pipeline": view,
        "dag": dag_layout(steps),
        "steps": steps,
        "by_name": {s["step"]: s for s in steps},
    }


@get("/w/{workspace:str}/pipelines/{run_id:str}")
async def pipeline_page(
    request: Request[Any, Any, Any], workspace: FromPath[str], run_id: FromPath[str]
) -> Template:
    subjects.validate_token(run_id, "run id")
    view = (await ask(request, workspace, GetPipeline(run_id=run_id))).data
    return await page(
        request,
        workspace,
        "pipeline.html",
        nav="experiments",
        live=view.get("status") not in TERMINAL,
        **_pipeline_context(view),
    )


def _trial_rows(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    best = sweep.get("best_index")
    return [
        {
            **t,
            "best_text": number(t["best"]) if t.get("best") is not None else "",
            "last_text": number(t["last"]) if t.get("last") is not None else "",
            "is_best": t["index"] == best,
        }
        for t in sweep["trials"]
    ]


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S")


@get("/w/{workspace:str}/sweeps/{run_id:str}")
async def sweep_page(
    request: Request[Any, Any, Any], workspace: FromPath[str], run_id: FromPath[str]
) -> Template:
    subjects.validate_token(run_id, "run id")
    sweep = (await ask(request, workspace, GetSweep(run_id=run_id))).data
    spec = sweep["spec"]
    return await page(
        request,
        workspace,
        "sweep.html",
        nav="experiments",
        sweep=sweep,
        spec=spec,
        parameters=sorted(spec.get("search_space", {})),
        trials=_trial_rows(sweep),
        chart=parallel_coordinates(sweep),
        submitted=_when(sweep.get("submitted_at")),
        ended=_when(sweep.get("ended_at")),
        live=sweep.get("status") not in TERMINAL,
    )


#: the tag a pipeline's step run carries (its step's name), and a sweep's trial run (its
#: parameters): which page the parent of a job's run is shown on
FLOW_TAGS = {"pipeline_step": "pipelines", "hyperparameters": "sweeps"}
#: the most jobs of a list (the newest) whose pipeline or sweep is looked up
FLOW_LINKS_MOST = 50


async def flow_links(
    request: Request[Any, Any, Any], workspace: str, jobs: list[dict[str, Any]]
) -> None:
    """Each of the first :data:`FLOW_LINKS_MOST` jobs of ``jobs`` that is a pipeline's step or
    a sweep's trial gets ``flow``: ``kind`` (``pipeline``, ``sweep``) and the ``href`` of its
    parent run's page, read from the job's run (its parent and tags)."""
    found = jobs[:FLOW_LINKS_MOST]
    runs = await asyncio.gather(
        *(ask(request, workspace, GetRun(run_id=j["run_id"])) for j in found),
        return_exceptions=True,
    )
    for job, run in zip(found, runs, strict=True):
        if isinstance(run, NotFound):  # a job whose run the read model has not applied yet
            continue
        if isinstance(run, BaseException):
            raise run
        parent, tags = run.data.get("parent_run_id"), run.data.get("tags") or {}
        kinds = [kind for tag, kind in FLOW_TAGS.items() if tag in tags]
        if parent and kinds:
            job["flow"] = {"kind": kinds[0][:-1], "href": f"/w/{workspace}/{kinds[0]}/{parent}"}


# -- live ------------------------------------------------------------------------------------


async def _view_events(
    client: Client, make: Callable[..., Query], touch: Callable[[], None]
) -> AsyncIterator[ServerSentEventMessage]:
    """``view`` whenever the query's answer changed, until its ``status`` has ended; then
    ``end``. A failure is sent as ``failed`` with its message (the page keeps what it shows)."""
    yield ServerSentEventMessage(comment="live", retry=2000, data=None)
    try:
        first = await client.ask(make())
        seq, shown = first.seq, first.data
        yield ServerSentEventMessage(event="view", data=json.dumps(shown))
        while shown.get("status") not in TERMINAL:
            try:
                woke = await client.ask(make(min_seq=seq + 1, wait_s=WAIT_S))
            except Unavailable:  # nothing new within WAIT_S
                continue
            finally:
                touch()
            seq = woke.seq
            if woke.data != shown:
                shown = woke.data
                yield ServerSentEventMessage(event="view", data=json.dumps(shown))
    except CairnError as exc:
        yield ServerSentEventMessage(event="failed", data=json.dumps({"message": exc.message}))
        return
    yield ServerSentEventMessage(event="end", data=json.dumps({"status": shown.get("status")}))


async def _stream(
    request: Request[Any, Any, Any], workspace: str, make: Callable[..., Query]
) -> ServerSentEvent:
    principal = principal_of(request)
    client = Client(principal.conn, workspace)
    await client.ask(make())  # NotFound / PermissionDenied before streaming
    LIVE.open(principal.person)
    after_response(request, lambda: LIVE.close(principal.person))
    pool: Pool = request.app.state.pool
    events = _view_events(client, make, lambda: pool.touch(principal.user))
    return ServerSentEvent(events, headers={"x-accel-buffering": "no"})


@get("/api/w/{workspace:str}/pipelines/{run_id:str}/live")
async def pipeline_live(
    request: Request[Any, Any, Any], workspace: FromPath[str], run_id: FromPath[str]
) -> ServerSentEvent:
    """The pipeline (``pipeline.get``) whenever it changes, until it has ended."""
    subjects.validate_token(run_id, "run id")
    return await _stream(request, workspace, lambda **k: GetPipeline(run_id=run_id, **k))


@get("/api/w/{workspace:str}/sweeps/{run_id:str}/live")
async def sweep_live(
    request: Request[Any, Any, Any], workspace: FromPath[str], run_id: FromPath[str]
) -> ServerSentEvent:
    """The sweep (``sweep.get``) whenever it changes, until it has ended."""
    subjects.validate_token(run_id, "run id")
    return await _stream(request, workspace, lambda **k: GetSweep(run_id=run_id, **k))


FLOW_PAGES: list[Any] = [pipeline_page, sweep_page, pipeline_live, sweep_live]
