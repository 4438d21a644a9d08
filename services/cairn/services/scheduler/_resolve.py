"""Checking a submitted job and pinning what it refers to, so the run records what it ran
with: the environment (name, version, spec, hash), the snapshot (committed in its staging
area), dataset and model inputs (a version number, never "latest" or an alias that may move),
datastores (they exist)."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from cairn import lookup
from cairn.bus import AggregateCache, Recorded
from cairn.data import check_url, s3_location
from cairn.domain import asset, model, workspace
from cairn.domain import run as runs
from cairn.domain.environment import CURATED, parse_reference
from cairn.errors import InvalidInput, NotFound
from cairn.proto import subjects
from cairn.proto.assets import DatasetSpec, DatastoreSpec, EnvironmentSpec
from cairn.proto.events import AssetRegistered, ModelVersionRegistered
from cairn.proto.jobs import SNAPSHOT_FILE, JobEnvironment, JobInput, JobOutput, JobSpec, SubmitJob
from cairn.proto.paths import validate_run_path
from cairn.proto.subjects import validate_token
from cairn.services.scheduler._pythons import Pythons
from cairn.settings import Settings

__all__ = [
    "DEFAULT_DATASTORE",
    "EXISTS_FOR_S",
    "resolve_asset",
    "resolve_job",
    "resolve_model",
]

_Item = TypeVar("_Item", JobInput, JobOutput)

DEFAULT_DATASTORE = workspace.DEFAULT_DATASTORE


#: how long a submit believes that a compute target or datastore it has seen still exists
#: (a deletion on another replica takes this long to be seen; a fresh read has the same race
#: with a deletion, only a shorter window)
EXISTS_FOR_S = 2.0


async def resolve_asset(
    cache: AggregateCache,
    settings: Settings,
    ws: str,
    kind: str,
    name: str,
    version: int | None,
    *,
    max_age_s: float | None = None,
) -> AssetRegistered:
    """Version ``version`` (default: latest) of a registered or built-in asset, read fresh,
    or from a cached history at most ``max_age_s`` old where that one resolves."""
    builtin = asset.builtin_assets(settings.home_path, ws, kind).get(name)

    subject = subjects.event(ws, kind, subjects.name_to_id(name))
    aggregate = asset.aggregate(kind)

    def resolve(history: list[Recorded]) -> AssetRegistered:
        state = cache.state(subject, aggregate, history)
        return asset.resolve(state, builtin, kind, name, version)

    if max_age_s is None:
        return resolve(await cache.refresh(subject))
    cached: list[AssetRegistered] = []  # what the cached history resolved to, when it did

    def resolves(history: list[Recorded]) -> bool:
        try:
            cached.append(resolve(history))
        except NotFound:
            return False
        return True

    history = await cache.read(subject, resolves, max_age_s=max_age_s)
    return cached[0] if cached else resolve(history)


def _check_basics(job: JobSpec) -> None:
    if not job.command or not job.command[0]:
        raise InvalidInput("a job needs a command")
    if job.serve is None and not 1 <= job.max_attempts <= 10:
        raise InvalidInput("max_attempts must be between 1 and 10")
    if job.timeout_s is not None and job.timeout_s <= 0:
        raise InvalidInput("timeout_s must be positive")
    if not -1000 <= job.priority <= 1000 or job.gpus < 0:
        raise InvalidInput("priority must be within -1000..1000 and gpus >= 0")
    names = [i.name for i in job.inputs] + [o.name for o in job.outputs]
    if len(names) != len(set(names)):
        raise InvalidInput("input and output names must be unique")
    for where in [i.path_on_compute for i in job.inputs] + [o.path_on_compute for o in job.outputs]:
        if where is not None:
            validate_run_path(where)


async def _input(cache: AggregateCache, settings: Settings, ws: str, item: JobInput) -> JobInput:
    if item.model is not None:
        if item.url is not None or item.dataset is not None or item.datastore is not None:
            raise InvalidInput(f"input {item.name}: a model input names nothing else")
        if item.version is not None and item.alias is not None:
            raise InvalidInput(f"input {item.name}: name a model version or an alias, not both")
        return await _pin_model(cache, ws, item)
    if item.alias is not None:
        raise InvalidInput(f"input {item.name}: only a model input names an alias")
    if item.url is not None:
        return await _url_input(cache, settings, ws, item)
    if (item.dataset is None) == (item.datastore is None):
        raise InvalidInput(f"input {item.name}: name a dataset, a datastore path or a URL")
    if item.dataset is not None:
        ev = await resolve_asset(cache, settings, ws, "dataset", item.dataset, item.version)
        assert isinstance(ev.spec, DatasetSpec)
        return msgspec.structs.replace(item, version=ev.version)
    assert item.datastore is not None
    await resolve_asset(
        cache, settings, ws, "datastore", item.datastore, None, max_age_s=EXISTS_FOR_S
    )
    if item.path:
        validate_run_path(item.path.strip("/"))
    return item


async def _pin_model(cache: AggregateCache, ws: str, item: JobInput) -> JobInput:
    """``item`` with the version its alias (or "latest") names now, read fresh: the run
    records the files it was given, not whatever the alias points at when an agent runs it.
    The alias stays beside the version, for the record (a version wins over an alias)."""
    found = await resolve_model(cache, ws, item)
    return msgspec.structs.replace(item, version=found.version)


async def resolve_model(cache: AggregateCache, ws: str, item: JobInput) -> ModelVersionRegistered:
    """The model version a model input names now (its version, its alias, or the latest not
    archived), read fresh."""
    assert item.model is not None
    subject = subjects.event(ws, model.KIND, subjects.name_to_id(item.model))
    history = await cache.refresh(subject)
    if not history:
        raise NotFound(f"input {item.name}: no model called {item.model!r}")
    state = cache.state(subject, model.AGGREGATE, history)
    version = model.resolve(state, item.model, item.version, item.alias)
    return state.versions[version]


async def _url_input(
    cache: AggregateCache, settings: Settings, ws: str, item: JobInput
) -> JobInput:
    """A URL input as the agent will read it: an ``s3://`` one through the S3 datastore of
    its bucket that the submitter named (the SDK finds it), whose prefix and path must be
    the URL's key; any other with no datastore."""
    assert item.url is not None
    where = f"input {item.name}"
    check_url(item.url, where)
    if item.dataset is not None:
        raise InvalidInput(f"{where}: a URL input names no dataset")
    if not item.url.lower().startswith("s3://"):
        if item.datastore is not None:
            raise InvalidInput(f"{where}: only an s3:// URL input is read through a datastore")
        return item
    if item.datastore is None:
        raise InvalidInput(
            f"{where}: an s3:// URL is read through the registered S3 datastore of its bucket:"
            " name it (the SDK and `cairn job create` find it), or register the bucket with"
            " Datastore.register_s3"
        )
    bucket, key = s3_location(item.url, where)
    ev = await resolve_asset(
        cache, settings, ws, "datastore", item.datastore, None, max_age_s=EXISTS_FOR_S
    )
    spec = ev.spec
    assert isinstance(spec, DatastoreSpec)
    path = item.path.strip("/")
    if path:
        validate_run_path(path)
    full = "/".join(p for p in (spec.prefix.strip("/"), path) if p)
    if spec.kind != "s3" or spec.bucket != bucket or full != key:
        raise InvalidInput(
            f"{where}: datastore {item.datastore} does not read {item.url!r:.200}"
            f" (its bucket and prefix with path {path!r:.200} are not that bucket and key)"
        )
    return item


async def _output(
    cache: AggregateCache, settings: Settings, ws: str, run_id: str, item: JobOutput
) -> JobOutput:
    if item.model_type is not None:  # run files only, under the job's own folder
        if item.datastore is not None or item.path:
            raise InvalidInput(f"output {item.name}: a model output has no datastore path")
        return item
    store = item.datastore
    if store is None:  # the workspace's default, as set last (a fresh read)
        state = await lookup.state(cache, workspace.AGGREGATE, ws, ws, fresh=True)
        store = state.default_datastore
    await resolve_asset(cache, settings, ws, "datastore", store, None, max_age_s=EXISTS_FOR_S)
    path = item.path.strip("/") or f"job-outputs/{run_id}/{item.name}"
    validate_run_path(path)
    return msgspec.structs.replace(item, datastore=store, path=path)


async def resolve_job(
    cache: AggregateCache, settings: Settings, ws: str, cmd: SubmitJob, pythons: Pythons
) -> JobSpec:
    job = cmd.job
    _check_basics(job)
    if job.snapshot is not None:
        await _check_snapshot(cache, ws, job)
    env = job.environment
    if cmd.environment_name is not None:
        # Azure's references (``azureml:...``, registry URIs, its curated names) as written
        name, version = parse_reference(cmd.environment_name)
        if name == cmd.environment_name or name not in CURATED:  # else: see parse_reference
            version = cmd.environment_version if version is None else version
        ev = await resolve_asset(cache, settings, ws, "environment", name, version)
        assert isinstance(ev.spec, EnvironmentSpec)
        env = JobEnvironment(name=name, version=ev.version, spec=ev.spec, spec_hash=ev.spec_hash)
    elif env is not None:
        env = msgspec.structs.replace(env, spec_hash=asset.spec_hash(env.spec))
    if env is not None:
        await pythons.check(env.spec, ws, cmd.compute)
    inputs = [await _input(cache, settings, ws, validate_item(i)) for i in job.inputs]
    outputs = [
        await _output(cache, settings, ws, cmd.run_id, validate_item(o)) for o in job.outputs
    ]
    return msgspec.structs.replace(job, environment=env, inputs=inputs, outputs=outputs)


def validate_item(item: _Item) -> _Item:
    validate_token(item.name, "input or output name")
    return item


async def _check_snapshot(cache: AggregateCache, ws: str, job: JobSpec) -> None:
    if job.snapshot_area is None:
        raise InvalidInput("a snapshot needs the staging area it was uploaded to")

    subject = subjects.event(ws, runs.STAGING.kind, job.snapshot_area)

    def files(history: list[Recorded]) -> dict[str, str]:
        return cache.state(subject, runs.STAGING, history).files

    def committed(history: list[Recorded]) -> bool:  # a commit is for good: trust the cache
        return files(history).get(SNAPSHOT_FILE) == job.snapshot

    if files(await cache.read(subject, committed)).get(SNAPSHOT_FILE) != job.snapshot:
        raise InvalidInput(
            f"snapshot {job.snapshot} was not uploaded to staging area {job.snapshot_area}"
        )
