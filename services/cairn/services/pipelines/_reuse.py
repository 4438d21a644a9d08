"""A step's reuse key: the digest of everything the step consumes.

* the code: the snapshot's digest;
* the environment: its resolved spec hash (a named one at the version it resolves to now);
* the command, its variables and its declared outputs;
* every input's content: a dataset version's spec hash (which covers the fingerprint of each
  of its files at registration) and its datastore files as they are now, a datastore path's
  files as they are now (path, size, and the SHA-256 of a local file or the ETag of an
  object: a file changed in place changes the key), a model version as the input names it
  now (its number and its files' digests), and for an input bound to an upstream step the
  digests of the files that step's run stored under that output.

A step reading a URL has no key ("" : never reused): its bytes have no fingerprint short of
downloading them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import AggregateCache
from cairn.data import Datastores
from cairn.domain import asset
from cairn.domain.environment import CURATED, parse_reference
from cairn.proto.jobs import JobInput
from cairn.proto.pipelines import PipelineStep
from cairn.rpc import Client
from cairn.services.scheduler._resolve import resolve_asset, resolve_model
from cairn.settings import Settings

__all__ = ["output_fingerprint", "reuse_key", "upstream_fingerprint"]


async def _environment(
    cache: AggregateCache, settings: Settings, ws: str, step: PipelineStep
) -> str:
    if step.environment_name is not None:
        name, version = parse_reference(step.environment_name)
        if name == step.environment_name or name not in CURATED:
            version = step.environment_version if version is None else version
        ev = await resolve_asset(cache, settings, ws, "environment", name, version)
        return ev.spec_hash
    if step.job.environment is not None:
        return asset.spec_hash(step.job.environment.spec)
    return ""


async def _input(
    cache: AggregateCache, settings: Settings, ws: str, stores: Datastores, item: JobInput
) -> Any:
    if item.url is not None:
        return None
    if item.model is not None:  # the version it names now, as the scheduler pins it
        found = await resolve_model(cache, ws, item)
        files = sorted([f.path, f.digest, f.size] for f in found.files)
        return ["model", item.model, found.version, files]
    if item.dataset is not None:
        ev = await resolve_asset(cache, settings, ws, "dataset", item.dataset, item.version)
        return ["dataset", item.dataset, ev.version, ev.spec_hash, await _now(stores, ev.spec)]
    store = await stores.get(item.datastore or "")
    prefix = item.path.strip("/")
    entries = await store.list(prefix)
    if not entries and (one := await store.stat(prefix)) is not None:
        entries = [one]
    files = []
    for entry in sorted(entries, key=lambda e: e.path):
        known = entry if entry.etag else await store.fingerprint(entry)
        files.append([known.path, known.size, known.etag])
    return ["datastore", item.datastore, prefix, files]


async def _now(stores: Datastores, spec: Any) -> list[list[Any]]:
    """A dataset version's datastore files as they are now (a snapshot's copies cannot
    change): a file changed in place since registration changes the key, so a step is never
    reused over bytes its version no longer names."""
    files = []
    for f in getattr(spec, "files", []):
        if f.blob is not None:
            continue
        store = await stores.get(f.datastore)
        now = await store.stat(f.path)
        now = await store.fingerprint(now) if now is not None and not now.etag else now
        files.append([f.datastore, f.path, None if now is None else [now.size, now.etag]])
    return files


def output_fingerprint(files: dict[str, str], folder: str) -> list[list[str]]:
    """The run files under ``folder`` (an output's folder in the run) with their digests."""
    prefix = folder.rstrip("/") + "/"
    return sorted([p[len(prefix) :], d] for p, d in files.items() if p.startswith(prefix))


async def reuse_key(
    cache: AggregateCache,
    settings: Settings,
    client: Client,
    step: PipelineStep,
    upstream: dict[str, list[list[str]]],
) -> str:
    """The step's reuse key ("" when it has none); ``upstream`` is the fingerprint of each
    input bound to another step's output."""
    job = step.job
    inputs: dict[str, Any] = {}
    ws = client.workspace
    async with Datastores(client, settings) as stores:
        for item in job.inputs:
            found = await _input(cache, settings, ws, stores, item)
            if found is None:
                return ""
            inputs[item.name] = [item.mode, item.path_on_compute, found]
    for bound in step.step_inputs:
        inputs[bound.name] = [bound.mode, "step", upstream[bound.name]]
    facts = {
        "snapshot": job.snapshot,
        "environment": await _environment(cache, settings, ws, step),
        "command": job.command,
        "env_vars": job.env_vars,
        "outputs": [msgspec.to_builtins(o) for o in job.outputs],
        "inputs": inputs,
    }
    blob = json.dumps(facts, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


async def upstream_fingerprint(
    cache: AggregateCache, ws: str, run_id: str, output: str
) -> tuple[list[list[str]], Any]:
    """What run ``run_id`` stored under output ``output``, and that output's resolved spec."""
    state = await lookup.run_state(cache, ws, run_id, fresh=True)
    spec = next(o for o in (state.job.outputs if state.job else []) if o.name == output)
    folder = spec.path_on_compute or f"outputs/{output}"
    return output_fingerprint(state.files, folder), spec
