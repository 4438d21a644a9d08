"""The JSON API of runs under ``/api/w/<workspace>/``: what the studio's run pages show, for
scripts (a bearer token) and for the pages' own scripts (the session). Same queries, same
user, same errors (``{code, message}`` with the HTTP status of the error's kind)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from cairn.errors import InvalidInput, NotFound
from cairn.proto import subjects
from cairn.proto.jobs import GetJob
from cairn.rpc import Client
from cairn.services.gateway._app import ask
from cairn.services.gateway._auth import principal_of
from cairn.services.gateway._live import history_pages
from cairn.services.gateway._runs import (
    PAGE_SIZE,
    RunsView,
    compare_data,
    fetch_runs,
    file_stream,
    metric_names,
    parse_order,
    run_files,
    run_record,
)

__all__ = ["API_ROUTES"]

#: how many points one history response holds by default, and at most
HISTORY_LIMIT = 100_000
HISTORY_MOST = 1_000_000
#: past every sequence and index: ``after=(step, _END, _END)`` starts after step ``step``
_END = 2**62


@get("/api/w/{workspace:str}/runs")
async def api_runs(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    experiment: FromQuery[str],
    filter: FromQuery[str] = "",
    order: FromQuery[str] = "",
    limit: FromQuery[int] = PAGE_SIZE,
    cursor: FromQuery[str] = "",
) -> dict[str, Any]:
    """The runs of ``experiment``, a page at a time: ``{"runs": [...], "next_cursor":
    str | null, "remaining": int | null}``; pass
    ``next_cursor`` back as ``cursor`` (same filter and order) for the next page."""
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be 1 to 1000")
    view = RunsView(
        filter=filter.strip(), order_by=parse_order(order), limit=limit, cursor=cursor or None
    )
    page = await fetch_runs(request, workspace, experiment, view)
    return {"runs": page.runs, "next_cursor": page.next_cursor, "remaining": page.remaining}


@get("/api/w/{workspace:str}/runs/{run_id:str}")
async def api_run(
    request: Request[Any, Any, Any], workspace: FromPath[str], run_id: FromPath[str]
) -> dict[str, Any]:
    """The run's record, with ``job`` (its job's record, or null for an interactive run) and
    ``metrics`` (the names of its scalar metrics)."""
    run = await run_record(request, workspace, run_id)
    try:
        job = (await ask(request, workspace, GetJob(run_id=run_id))).data
    except NotFound:
        job = None
    return {**run, "job": job, "metrics": await metric_names(request, workspace, run_id)}


@get("/api/w/{workspace:str}/runs/{run_id:str}/history")
async def api_history(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    run_id: FromPath[str],
    name: FromQuery[str],
    after_step: FromQuery[int | None] = None,
    limit: FromQuery[int] = HISTORY_LIMIT,
    cursor: FromQuery[str] = "",
) -> dict[str, Any]:
    """The points ``[step, time, value]`` of scalar metric ``name`` (after step ``after_step``
    when given), in step order, at most ``limit`` (1 to 1,000,000) of them: ``{"name",
    "points", "seq", "next_cursor": str | null}``; pass ``next_cursor`` back as ``cursor`` for
    the points after these."""
    subjects.validate_token(run_id, "run id")
    if not 1 <= limit <= HISTORY_MOST:
        raise InvalidInput(f"limit must be 1 to {HISTORY_MOST:,}")
    client = Client(principal_of(request).conn, workspace)
    after = None if after_step is None else (after_step, _END, _END)
    if cursor:
        after = _parse_cursor(cursor)
    points, after, seq, more = await history_pages(client, run_id, name, after, most=limit)
    next_cursor = ".".join(str(part) for part in after) if more else None
    return {"name": name, "points": points, "seq": seq, "next_cursor": next_cursor}


def _parse_cursor(cursor: str) -> tuple[int, int, int]:
    parts = cursor.split(".")
    try:
        step, seq, index = (int(part) for part in parts)
    except ValueError:
        raise InvalidInput("cursor must be a next_cursor this API returned") from None
    return step, seq, index


@get("/api/w/{workspace:str}/runs/{run_id:str}/files")
async def api_files(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    run_id: FromPath[str],
    prefix: FromQuery[str] = "",
) -> list[dict[str, Any]]:
    subjects.validate_token(run_id, "run id")
    return await run_files(request, workspace, run_id, prefix)


@get("/api/w/{workspace:str}/runs/{run_id:str}/file", media_type="application/octet-stream")
async def api_file(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    run_id: FromPath[str],
    path: FromQuery[str],
) -> Stream:
    """The bytes of run file ``path``."""
    return await file_stream(request, workspace, run_id, path)


@get("/api/w/{workspace:str}/compare")
async def api_compare(
    request: Request[Any, Any, Any], workspace: FromPath[str], runs: FromQuery[str]
) -> dict[str, Any]:
    """``runs=a,b,...`` (2 to 10): the runs, their metric names, each one's last values."""
    ids = [r.strip() for r in runs.split(",") if r.strip()]
    for r in ids:
        subjects.validate_token(r, "run id")
    return await compare_data(request, workspace, ids)


API_ROUTES: list[Any] = [api_runs, api_run, api_history, api_files, api_file, api_compare]
