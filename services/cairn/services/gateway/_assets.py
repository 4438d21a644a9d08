"""The studio's pages for what a workspace holds besides its experiments: models (versions,
aliases and how they moved), datasets (versions, files, the first rows of a tabular one),
environments, compute targets with the agents serving them, and the job queue.

Each page asks the same queries as the SDK and CLI, as the signed-in user (:func:`ask`); the
agents come from their heartbeats, read over the user's own connection as ``cairn agent list``
reads them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import msgspec
from litestar import Request, get
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from nats.errors import Error as NatsError

from cairn.bus import live_agents
from cairn.data import PREVIEW_ROWS, is_snapshot, preview_table
from cairn.errors import CairnError, InvalidInput, NotFound
from cairn.proto.assets import DatasetSpec, GetAsset, ListAssets
from cairn.proto.jobs import DatasetRuns, ListJobs
from cairn.proto.registry import ListModels, ModelAliasHistory, ModelLineage
from cairn.rpc import Client
from cairn.services.gateway._app import ask
from cairn.services.gateway._auth import principal_of
from cairn.services.gateway._flows import flow_links
from cairn.services.gateway._pages import page

__all__ = ["ASSET_PAGES", "JOB_FILTERS"]

#: the jobs page's filters: name -> the statuses it shows (empty: every one)
JOB_FILTERS: dict[str, tuple[str, ...]] = {
    "all": (),
    "active": ("Queued", "Preparing", "Running", "CancelRequested"),
    "queued": ("Queued",),
    "running": ("Preparing", "Running", "CancelRequested"),
    "completed": ("Completed",),
    "failed": ("Failed",),
    "canceled": ("Canceled",),
}
#: how a dataset page names a separator
SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe", " ": "space"}
#: jobs a page shows at most (the newest)
JOBS_SHOWN = 500
#: model versions whose lineage a model page shows (the newest)
LINEAGES_SHOWN = 20
#: dataset versions a page links to at most (the newest)
VERSIONS_SHOWN = 100

Req = Request[Any, Any, Any]


def _href(workspace: str, *parts: str | int) -> str:
    return "/w/" + "/".join(quote(str(p), safe="") for p in (workspace, *parts))


def _name(request: Req, workspace: str, section: str, parsed: Path) -> str:
    """The name a detail page's path ends with, exactly as its link encoded it (a name may hold
    ``/``, which the router's path parameter would normalise away, as in ``a//b``)."""
    raw = request.scope.get("raw_path") or b""
    prefix = f"/w/{workspace}/{section}/".encode()
    if raw.startswith(prefix):
        return unquote(raw[len(prefix) :].split(b"?", 1)[0].decode("utf-8", "replace"))
    return str(parsed).removeprefix("/")


def _when(value: Any) -> str:
    """A moment (ISO text or epoch seconds) as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if value in (None, ""):
        return ""
    try:
        moment = (
            datetime.fromtimestamp(float(value), UTC)
            if isinstance(value, int | float)
            else datetime.fromisoformat(str(value))
        )
    except (TypeError, ValueError, OverflowError):
        return str(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(epoch: Any) -> str:
    try:
        seconds = max(0.0, time.time() - float(epoch))
    except (TypeError, ValueError):
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _size(n: Any) -> str:
    """Bytes as ``812 B``, ``1.8 KiB``, ``3.2 GiB``."""
    size, unit = float(n or 0), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"


# -- models -----------------------------------------------------------------------------------


def _inputs(workspace: str, lineage: dict[str, Any]) -> list[dict[str, str | None]]:
    """What a version's source run read and ran in, each linked to its version's page:
    datasets as ``name:version``, the environment as ``name:version`` (or the hash of an
    inline spec, which has no page)."""
    out: list[dict[str, str | None]] = []
    for kind, section, refs in (
        ("data", "datasets", lineage.get("datasets") or []),
        (
            "environment",
            "environments",
            [lineage["environment"]] if lineage.get("environment") else [],
        ),
    ):
        for ref in refs:
            name, _, version = str(ref).rpartition(":")
            href = None
            if name and version.isdigit():
                href = _href(workspace, section, name) + f"?version={version}"
            out.append({"kind": kind, "ref": str(ref), "href": href})
    return out


@get("/w/{workspace:str}/models")
async def models(request: Req, workspace: FromPath[str]) -> Template:
    rows = (await ask(request, workspace, ListModels())).data
    by_name: dict[str, dict[str, Any]] = {}
    for row in rows:  # ordered by name, then version: the last of a name is its latest
        entry = by_name.setdefault(row["name"], {"versions": 0, "aliases": []})
        entry["versions"] += 1
        entry["aliases"] += [f"{a} → v{row['version']}" for a in row["aliases"]]
        entry["latest"] = row
    shown = [
        {
            **entry,
            "name": name,
            "href": _href(workspace, "models", name),
            "updated": _when(entry["latest"]["created_at"]),
        }
        for name, entry in by_name.items()
    ]
    return await page(request, workspace, "models.html", nav="models", models=shown)


@get("/w/{workspace:str}/models/{path:path}")
async def model(request: Req, workspace: FromPath[str], path: FromPath[Path]) -> Template:
    name = _name(request, workspace, "models", path)
    moves = (await ask(request, workspace, ModelAliasHistory(name=name))).data
    rows = (await ask(request, workspace, ListModels(name=name, include_archived=True))).data
    if not rows:
        raise NotFound(f"no model called {name!r}")
    newest = list(reversed(rows))
    lineages = await asyncio.gather(
        *(
            ask(request, workspace, ModelLineage(name=name, version=row["version"]))
            for row in newest[:LINEAGES_SHOWN]
        )
    )
    versions = [
        {
            **row,
            "when": _when(row["created_at"]),
            "run_href": _href(workspace, "runs", row["run_id"]) if row["run_id"] else None,
            "inputs": _inputs(workspace, lineage.data) if lineage else [],
        }
        for row, lineage in itertools.zip_longest(newest, lineages)
    ]
    aliases = sorted((a, row["version"]) for row in rows for a in row["aliases"])
    timeline = [{**m, "when": _when(m["at"])} for m in reversed(moves)]
    return await page(
        request,
        workspace,
        "model.html",
        nav="models",
        name=name,
        versions=versions,
        aliases=aliases,
        timeline=timeline,
        back=_href(workspace, "models"),
    )


# -- datasets ---------------------------------------------------------------------------------


def _all_files(spec: dict[str, Any]) -> list[list[Any]]:
    return [*spec.get("files", []), *spec.get("url_files", [])]


@get("/w/{workspace:str}/datasets")
async def datasets(request: Req, workspace: FromPath[str]) -> Template:
    rows = (await ask(request, workspace, ListAssets(asset_kind="dataset"))).data
    shown = [
        {
            **row,
            "href": _href(workspace, "datasets", row["name"]),
            # datastore files and URL files alike: the size is the third field of each
            "files": len(_all_files(row["spec"])),
            "bytes": _size(sum(f[2] for f in _all_files(row["spec"]))),
        }
        for row in rows
    ]
    return await page(request, workspace, "datasets.html", nav="datasets", datasets=shown)


async def _preview(request: Req, workspace: str, spec: DatasetSpec) -> dict[str, Any]:
    """The first rows of a tabular snapshot version, or why there are none (said on the
    page). Only a snapshot's copies are read, from the artifact store over the person's own
    connection: a version of references would need datastore credentials or folders where the
    gateway runs, which it does not use on anyone's behalf (the page says how to read it)."""
    if spec.kind != "tabular":
        return {}
    if not is_snapshot(spec):
        return {"not_snapshot": True}
    client = Client(principal_of(request).conn, workspace)
    try:
        found = await preview_table(client, spec)
    except CairnError as exc:
        return {"error": exc.message}
    return {"table": found}


@get("/w/{workspace:str}/datasets/{path:path}")
async def dataset(
    request: Req,
    workspace: FromPath[str],
    path: FromPath[Path],
    version: FromQuery[int | None] = None,
) -> Template:
    name = _name(request, workspace, "datasets", path)
    record = (
        await ask(request, workspace, GetAsset(asset_kind="dataset", name=name, version=version))
    ).data
    latest = record["version"]
    if version is not None:
        latest = (await ask(request, workspace, GetAsset(asset_kind="dataset", name=name))).data[
            "version"
        ]
    spec = msgspec.convert(record["spec"], DatasetSpec)
    runs = (
        await ask(request, workspace, DatasetRuns(dataset=name, version=record["version"]))
    ).data
    base = _href(workspace, "datasets", name)
    return await page(
        request,
        workspace,
        "dataset.html",
        nav="datasets",
        record=record,
        spec=spec,
        separator=SEPARATORS.get(spec.separator, repr(spec.separator)),
        files=[
            {"where": f"{f.datastore}:{f.path}", "size": _size(f.size), "snapshot": bool(f.blob)}
            for f in spec.files
        ]
        + [
            {"where": f.url, "size": _size(f.size), "snapshot": bool(f.blob)}
            for f in spec.url_files
        ],
        versions=[
            {"version": v, "href": f"{base}?version={v}"}
            for v in range(latest, max(0, latest - VERSIONS_SHOWN), -1)
        ],
        runs=[{**r, "href": _href(workspace, "runs", r["run_id"])} for r in runs],
        preview=await _preview(request, workspace, spec),
        preview_rows=PREVIEW_ROWS,
        back=_href(workspace, "datasets"),
    )


# -- environments -----------------------------------------------------------------------------


@get("/w/{workspace:str}/environments")
async def environments(request: Req, workspace: FromPath[str]) -> Template:
    rows = (await ask(request, workspace, ListAssets(asset_kind="environment"))).data
    shown = [{**row, "href": _href(workspace, "environments", row["name"])} for row in rows]
    return await page(
        request, workspace, "environments.html", nav="environments", environments=shown
    )


@get("/w/{workspace:str}/environments/{path:path}")
async def environment(
    request: Req,
    workspace: FromPath[str],
    path: FromPath[Path],
    version: FromQuery[int | None] = None,
) -> Template:
    name = _name(request, workspace, "environments", path)
    q = GetAsset(asset_kind="environment", name=name, version=version)
    record = (await ask(request, workspace, q)).data
    latest = record["version"]
    if version is not None:
        q = GetAsset(asset_kind="environment", name=name)
        latest = (await ask(request, workspace, q)).data["version"]
    base = _href(workspace, "environments", name)
    return await page(
        request,
        workspace,
        "environment.html",
        nav="environments",
        record=record,
        spec=record["spec"],
        versions=[
            {"version": v, "href": f"{base}?version={v}"}
            for v in range(latest, max(0, latest - VERSIONS_SHOWN), -1)
        ],
        back=_href(workspace, "environments"),
    )


# -- compute and jobs -------------------------------------------------------------------------


@get("/w/{workspace:str}/compute")
async def compute(request: Req, workspace: FromPath[str]) -> Template:
    targets = (await ask(request, workspace, ListAssets(asset_kind="compute"))).data
    active = (await ask(request, workspace, ListJobs(active=True, limit=10_000))).data
    agents, agents_error = [], ""
    try:
        agents = await live_agents(principal_of(request).conn, workspace)
    except (NatsError, TimeoutError) as exc:  # said on the page: no permission, no bucket
        agents_error = f"the agents' heartbeats cannot be read: {exc!r}"
    running: dict[str, list[dict[str, Any]]] = {}
    for job in active:
        if job["agent_id"]:
            running.setdefault(job["agent_id"], []).append(
                {"run_id": job["run_id"], "href": _href(workspace, "runs", job["run_id"])}
            )
    shown_agents = [
        {
            **a,
            # the scheduler's view: an agent's heartbeat may be seconds old
            "busy": len(running.get(str(a.get("agent_id")), [])),
            "gpus": len(a.get("gpus") or []),
            "beat": _ago(a.get("heartbeat_at")),
            "beat_at": _when(a.get("heartbeat_at")),
            "jobs": running.get(str(a.get("agent_id")), []),
        }
        for a in agents
    ]
    shown_targets = []
    for target in targets:
        mine = [a for a in shown_agents if a.get("compute") == target["name"]]
        jobs = [j for j in active if j["compute"] == target["name"]]
        shown_targets.append(
            {
                **target,
                "agents": len(mine),
                "slots": sum(int(a.get("slots", 0)) for a in mine),
                "busy": sum(a["busy"] for a in mine),
                "queued": sum(1 for j in jobs if j["status"] == "Queued"),
                "running": sum(1 for j in jobs if j["status"] != "Queued"),
                "jobs_href": _href(workspace, "jobs")
                + f"?status=queued&compute={quote(target['name'], safe='')}",
            }
        )
    return await page(
        request,
        workspace,
        "compute.html",
        nav="compute",
        targets=shown_targets,
        agents=shown_agents,
        agents_error=agents_error,
    )


@get("/w/{workspace:str}/jobs")
async def jobs(
    request: Req,
    workspace: FromPath[str],
    status: FromQuery[str] = "all",
    compute: FromQuery[str | None] = None,
) -> Template:
    """The newest jobs, or those of one status (and compute target); the queue (queued and
    running) in full."""
    if status not in JOB_FILTERS:
        raise InvalidInput(f"status: one of {', '.join(JOB_FILTERS)}, not {status!r:.40}")
    recent = (await ask(request, workspace, ListJobs(compute=compute, limit=JOBS_SHOWN))).data
    q = ListJobs(compute=compute, active=True, limit=10_000)
    queue = (await ask(request, workspace, q)).data
    on = f"&compute={quote(compute, safe='')}" if compute else ""

    def of(name: str) -> list[dict[str, Any]]:
        wanted = JOB_FILTERS[name]
        rows = queue if wanted and set(wanted) <= set(JOB_FILTERS["active"]) else recent
        return [row for row in rows if not wanted or row["status"] in wanted]

    shown = [
        {
            **row,
            "href": _href(workspace, "runs", row["run_id"]),
            "submitted": _when(row["submitted_at"]),
        }
        for row in of(status)
    ]
    await flow_links(request, workspace, shown)
    filters = [
        {
            "name": name,
            "count": len(of(name)),
            "href": _href(workspace, "jobs") + f"?status={name}{on}",
            "here": name == status,
        }
        for name in JOB_FILTERS
    ]
    return await page(
        request,
        workspace,
        "jobs.html",
        nav="jobs",
        jobs=shown,
        filters=filters,
        status=status,
        compute=compute,
        every_compute=_href(workspace, "jobs") + f"?status={status}",
        limit=JOBS_SHOWN,
    )


ASSET_PAGES: list[Any] = [
    models,
    model,
    datasets,
    dataset,
    environments,
    environment,
    compute,
    jobs,
]
