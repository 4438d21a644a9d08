"""A job's data on the agent: inputs made local paths before it starts, outputs delivered
when it ends.

Inputs are cached by fingerprint under ``<state>/agent/data/<key>``: a dataset version by the
digests its registration recorded (checked against the datastore when first fetched), a
datastore folder by the ETags of its objects. A ``mount`` input is that cached copy itself,
read-only; a ``download`` input is a writable copy in the job's folder. A local datastore's
files have no cheap fingerprint, so they are copied each time (they are local already).
A file (a ``uri_file`` input, a file at a URL) keeps its name: it lands as
``inputs/<name>/<file name>``, unless ``path_on_compute`` names its path. A URL's files are
cached by the URL and the validators its server gives (ETag, Last-Modified, size); an
``s3://`` URL is its bucket's datastore path, cached by ETags like any.

An output folder is uploaded to its datastore path (recorded like any upload) and, when the
job names ``register_as``, registered as the next version of that file dataset. A model
output is already the run's files under its folder (uploaded with ``outputs/``); named, it is
registered from the run as the next version of that model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from cairn.data import (
    Remote,
    download_blob,
    download_entries,
    fetch_remote,
    list_url,
    materialise,
    open_datastore,
    read_only_tree,
    upload_pairs,
    writable_tree,
)
from cairn.errors import DataChanged, InvalidInput
from cairn.proto.assets import DataPath, DatasetSpec, GetAsset, RegisterDataset
from cairn.proto.jobs import JobInput, JobOutput
from cairn.proto.paths import validate_run_path
from cairn.proto.registry import GetModel, RegisterModelVersion
from cairn.rpc import Client
from cairn.settings import Settings

__all__ = ["DataContext", "Staged", "deliver_outputs", "input_path", "output_path", "stage_inputs"]


@dataclass(frozen=True)
class DataContext:
    """What moving a job's data needs: the workspace's client, and the agent's settings,
    whose workspace key opens the sealed credentials of the datastores the job declares."""

    client: Client
    settings: Settings


class Staged(msgspec.Struct, frozen=True):
    """Where an input landed, relative to the job's folder, and what it was."""

    path: str
    dataset: str | None = None
    version: int | None = None
    #: the job reads it as the dataset itself (``run.input_datasets[name]``), not a path
    as_dataset: bool = False


def input_path(item: JobInput) -> str:
    return validate_run_path(item.path_on_compute or f"inputs/{item.name}")


def output_path(item: JobOutput) -> str:
    return validate_run_path(item.path_on_compute or f"outputs/{item.name}")


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


async def _cached(cache: Path, key: str, fill: Callable[[Path], Awaitable[None]]) -> Path:
    """``cache/key``, filled once by ``fill(tmp)``: a copy is complete (``.ready`` inside)
    before it is renamed into place, so the target either does not exist or is whole; a
    fill that loses the race to another slot or agent on this machine is thrown away."""
    target = cache / key
    if (target / ".ready").exists():
        return target
    tmp = cache / f".{key}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        await fill(tmp)
        (tmp / ".ready").write_text("")
        read_only_tree(tmp)
        with contextlib.suppress(OSError):  # taken: someone else's complete copy is there
            os.rename(tmp, target)
    finally:
        if tmp.exists():
            writable_tree(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
    return target


async def _dataset_copy(ctx: DataContext, item: JobInput, cache: Path) -> tuple[Path, bool]:
    q = GetAsset(asset_kind="dataset", name=item.dataset or "", version=item.version)
    spec = msgspec.convert((await ctx.client.ask(q)).data["spec"], DatasetSpec)
    label = f"dataset {item.dataset!r} version {item.version}"

    async def fill(tmp: Path) -> None:
        await materialise(ctx.client, spec, tmp, label=label, settings=ctx.settings)

    files = [msgspec.to_builtins(f) for f in [*spec.files, *spec.url_files]]
    key = _key("dataset", files)
    return await _cached(cache, key, fill), True


async def _datastore_copy(ctx: DataContext, item: JobInput, cache: Path) -> tuple[Path, bool]:
    """The datastore's files under the input's path. An ``s3://`` URL input reads its
    bucket's datastore with that datastore's credentials, or unsigned when it has none,
    never with the agent's own."""
    store_name, prefix = item.datastore or "", item.path.strip("/")
    ambient = item.url is None
    async with open_datastore(ctx.client, store_name, ctx.settings, ambient=ambient) as store:
        entries = await store.list(prefix)
        if not entries:
            raise InvalidInput(f"input {item.name}: nothing at {store_name}:{prefix or '/'}")

        async def fill(tmp: Path) -> None:  # the files just listed, through the same store
            await download_entries(store, entries, tmp, overwrite=True, show=False)

        if all(e.etag for e in entries):
            key = _key("datastore", store_name, [msgspec.to_builtins(e) for e in entries])
            return await _cached(cache, key, fill), True
        tmp = cache / f".direct-{uuid.uuid4().hex}"
        await fill(tmp)
        return tmp, False


async def _url_copy(item: JobInput, cache: Path, allow_private: bool) -> tuple[Path, bool, Path]:
    """The URL's file (or an fsspec folder's files, in their layout) in a folder of their
    own, and the file or folder the job gets. Cached by URL and the validators the server
    gives now (ETag, Last-Modified, size), so a changed file is fetched again and an
    unchanged one is not; a URL without validators is fetched for each job."""
    assert item.url is not None
    for attempt in range(2):
        remotes = await list_url(item.url, allow_private=allow_private)

        async def fill(tmp: Path, remotes: list[Remote] = remotes) -> None:
            for r in remotes:
                # DataChanged if it is not what was listed
                await fetch_remote(r, tmp, allow_private=allow_private)

        try:
            if all(r.validator for r in remotes):
                files = [(r.url, r.path, r.size, r.validator) for r in remotes]
                copy, cached = await _cached(cache, _key("url", item.url, files), fill), True
            else:
                copy, cached = cache / f".direct-{uuid.uuid4().hex}", False
                copy.mkdir(parents=True)
                try:
                    await fill(copy)
                except BaseException:
                    shutil.rmtree(copy, ignore_errors=True)
                    raise
        except DataChanged:  # changed between listing and reading: list it again, once
            if attempt:
                raise
            continue
        return copy, cached, copy if remotes[0].in_folder else copy / remotes[0].path
    raise AssertionError("unreachable")


async def _model_copy(ctx: DataContext, item: JobInput, cache: Path) -> tuple[Path, bool]:
    """The model version's files in a folder of their own, as they lie under its registered
    path (a registered file keeps its name); not cached."""
    assert item.model is not None
    q = GetModel(name=item.model, version=item.version, alias=item.alias)
    record = (await ctx.client.ask(q)).data
    source = record["source_path"]
    tmp = cache / f".direct-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        for f in record["files"]:
            rel = Path(f["path"]).name if f["path"] == source else f["path"][len(source) + 1 :]
            target = tmp / validate_run_path(rel)
            await download_blob(
                ctx.client, f["digest"], int(f["size"]), target, show_progress=False
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, False


async def stage_inputs(
    ctx: DataContext, inputs: list[JobInput], src: Path, cache: Path
) -> dict[str, Staged]:
    staged: dict[str, Staged] = {}
    for item in inputs:
        path = input_path(item)
        if item.url is not None and item.datastore is None:
            copy, cached, inner = await _url_copy(item, cache, ctx.settings.url_allow_private_hosts)
        elif item.dataset is not None:
            copy, cached = await _dataset_copy(ctx, item, cache)
            inner = copy
        elif item.model is not None:
            copy, cached = await _model_copy(ctx, item, cache)
            inner = copy
        else:
            copy, cached = await _datastore_copy(ctx, item, cache)
            inner = copy / item.path.strip("/") if item.path.strip("/") else copy
        where = src / input_path(item)
        if inner.is_file() and item.path_on_compute is None:  # a file keeps its name
            path = f"{path}/{inner.name}"
            where = where / inner.name
        where.parent.mkdir(parents=True, exist_ok=True)
        if item.mode == "mount" and cached:
            os.symlink(inner, where, target_is_directory=inner.is_dir())
        elif inner.is_dir():
            ignore = shutil.ignore_patterns(".ready")
            await asyncio.to_thread(shutil.copytree, inner, where, ignore=ignore)
            await asyncio.to_thread(writable_tree, where)
        else:
            await asyncio.to_thread(shutil.copyfile, inner, where)
        if not cached:
            shutil.rmtree(copy, ignore_errors=True)
        staged[item.name] = Staged(
            path,
            item.dataset,
            item.version,
            item.as_dataset and item.dataset is not None,
        )
    return staged


async def deliver_outputs(
    ctx: DataContext, outputs: list[JobOutput], src: Path, run_id: str
) -> None:
    for item in outputs:
        folder = src / output_path(item)
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()] if folder.is_dir() else []
        if not files:
            continue
        if item.model_type is not None:
            if item.register_as:
                await ctx.client.send(_model_version(item, run_id))
            continue
        assert item.datastore is not None
        pairs = [(p, f"{item.path}/{p.relative_to(folder).as_posix()}") for p in files]
        uploaded = await upload_pairs(
            ctx.client,
            item.datastore,
            pairs,
            overwrite=True,
            show_progress=False,
            settings=ctx.settings,
        )
        if item.register_as:
            paths = [DataPath(item.datastore, item.path)]
            spec = DatasetSpec(kind="file", paths=paths, files=uploaded.files)
            cmd = RegisterDataset(
                command_id="out-" + _key(run_id, item.name),  # a retried delivery registers once
                name=item.register_as,
                spec=spec,
                create_new_version=True,
                description=f"output {item.name} of run {run_id}",
            )
            await ctx.client.send(cmd)


def _model_version(item: JobOutput, run_id: str) -> RegisterModelVersion:
    """The command registering model output ``item`` from the run's files in its folder."""
    assert item.register_as is not None and item.model_type is not None
    return RegisterModelVersion(
        command_id="out-" + _key(run_id, item.name),  # a retried delivery registers once
        name=item.register_as,
        path=output_path(item),
        run_id=run_id,
        description=f"output {item.name} of run {run_id}",
        properties={"run_id": run_id, "output": item.name, "type": item.model_type},
        framework=item.model_type,
    )
