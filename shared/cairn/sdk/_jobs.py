"""Submitting jobs and following them (async core): ``ScriptRunConfig``, snapshots, logs
(``Estimator`` and its framework shapes: :mod:`cairn.sdk._estimators`).

``experiment.submit(config)`` snapshots ``source_directory`` (see :mod:`cairn.snapshot`),
uploads the archive into a staging area named after its digest unless that area already holds
it, and sends ``SubmitJob`` to the scheduler. ``run.wait_for_completion(show_output=True)``
prints the job's output from the LOGS stream as it arrives, until the run has ended and its
last log chunk was printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from cairn.data import resolve_s3_url, upload_file
from cairn.errors import CairnError, InvalidInput, NotFound
from cairn.proto import subjects
from cairn.proto.artifacts import GetRunFile
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.commands import GetRun
from cairn.proto.jobs import (
    SNAPSHOT_FILE,
    JobEnvironment,
    JobInput,
    JobOutput,
    JobSpec,
    SubmitJob,
)
from cairn.rpc import Client
from cairn.sdk._async_data import AsyncDatastores
from cairn.sdk._refusals import refuses
from cairn.sdk._session import Session, new_id
from cairn.sdk._waiting import WaitDisplay, Whereabouts
from cairn.snapshot import digest_of, pack

__all__ = [
    "Binding",
    "InputMode",
    "RunFailedError",
    "ScriptRunConfig",
    "build_job",
    "follow",
    "print_logs",
    "submit",
    "upload_code",
    "upload_local_input",
    "upload_snapshot",
]

TERMINAL = ("Completed", "Failed", "Canceled")
InputMode = Literal["download", "mount"]


class RunFailedError(CairnError):
    """``wait_for_completion(raise_on_error=True)`` on a run that did not complete."""

    code = "run_failed"


@runtime_checkable
class Binding(Protocol):
    """Data bound to a job (a datastore path or dataset version, read or written); in a job's
    arguments it stands for the local path it becomes on the agent."""

    def job_binding(self) -> JobInput | JobOutput: ...


class EnvironmentLike(Protocol):
    """An environment as a job names it: registered (a version) or inline (its spec)."""

    name: str
    version: int | None

    def spec(self) -> EnvironmentSpec: ...


class ScriptRunConfig:
    """What to run and where, with the Azure ML v1 names: a script in ``source_directory``
    with ``arguments``, or a ``command`` (a list, or a string split like a shell would),
    on ``compute_target`` (a name or a ``ComputeTarget``) in ``environment``. A
    ``run_config`` (``RunConfiguration``) gives the target, environment, docker settings and
    variables that are not given here. ``docker_runtime_config`` (``DockerConfiguration``)
    asks for an isolated job, which every Cairn job is."""

    @refuses(
        distributed_job_config="a Cairn job is one process on one agent; ask for several GPUs"
        " with gpus=, or run several jobs (a sweep, a pipeline)",
        resume_from="a job starts from its snapshot; pass a checkpoint as an input instead",
    )
    def __init__(
        self,
        source_directory: str | Path = ".",
        script: str | None = None,
        arguments: list[Any] | None = None,
        run_config: Any = None,
        compute_target: Any = None,
        environment: Any = None,
        distributed_job_config: Any = None,
        resume_from: Any = None,
        max_run_duration_seconds: float | None = None,
        command: list[str] | str | None = None,
        docker_runtime_config: Any = None,
        *,
        max_attempts: int = 3,
        priority: int = 0,
        gpus: int = 0,
        environment_variables: dict[str, str] | None = None,
        secrets: list[str] | None = None,
    ) -> None:
        if (script is None) == (command is None):
            raise InvalidInput("a ScriptRunConfig takes exactly one of script= and command=")
        self.source_directory = Path(source_directory)
        self.script = script
        self.bindings = [a for a in arguments or [] if isinstance(a, Binding)]
        self.arguments = [str(a) for a in arguments or []]
        self.command = command
        self.run_config = run_config
        if run_config is not None:  # what is given here wins, as in Azure ML
            compute_target = compute_target if compute_target is not None else run_config.target
            environment = environment if environment is not None else run_config.environment
            docker_runtime_config = docker_runtime_config or run_config.docker
            environment_variables = {
                **run_config.environment_variables,
                **(environment_variables or {}),
            }
            if max_run_duration_seconds is None:
                max_run_duration_seconds = run_config.max_run_duration_seconds
        docker = docker_runtime_config
        if docker is not None and getattr(docker, "use_docker", None) is not True:
            raise InvalidInput(
                "ScriptRunConfig: docker_runtime_config= takes DockerConfiguration(use_docker=True)"
            )
        self.compute_target = compute_target
        self.environment: str | EnvironmentLike | None = environment
        #: a ``DockerConfiguration``: it refuses ``use_docker=False``, so what it holds is a
        #: request for isolation, which every agent gives
        self.docker_runtime_config = docker_runtime_config
        self.max_run_duration_seconds = max_run_duration_seconds
        self.max_attempts = max_attempts
        self.priority = priority
        self.gpus = gpus
        self.environment_variables = dict(environment_variables or {})
        #: the workspace secrets the script may read with ``run.get_secret`` (no other)
        self.secrets = list(secrets or [])
        #: data inputs and outputs given directly (a job file's), besides argument bindings
        self.job_inputs: list[JobInput] = []
        self.job_outputs: list[JobOutput] = []
        #: local files or folders uploaded to the default datastore as inputs: name -> (path, mode)
        self.local_inputs: dict[str, tuple[Path, InputMode]] = {}
        #: a snapshot uploaded before (digest, staging area), used instead of
        #: ``source_directory`` (a registered component's code)
        self.snapshot: tuple[str, str] | None = None

    def argv(self) -> list[str]:
        if self.script is not None:
            return ["python", self.script, *self.arguments]
        if isinstance(self.command, str):
            import shlex

            return [*shlex.split(self.command), *self.arguments]
        return [*(self.command or []), *self.arguments]

    @property
    def compute_name(self) -> str:
        target = self.compute_target
        return str(getattr(target, "name", target) or "local")


async def upload_snapshot(
    client: Client, source: Path, known: set[str] | None = None, *, show: bool | None = None
) -> tuple[str, str]:
    """Archive ``source`` and upload it unless its staging area already holds those bytes
    (``known``: digests this client has seen uploaded), a large one with a bar on a terminal
    (``show``); returns the digest and the area."""
    data = await asyncio.to_thread(pack, source)
    digest = digest_of(data)
    area = "snap-" + digest.removeprefix("sha256:")[:40]
    if known is not None and digest in known:
        return digest, area
    try:
        found = (await client.ask(GetRunFile(run_id=area, path=SNAPSHOT_FILE, wait_s=0))).data
        if found["digest"] == digest:
            if known is not None:
                known.add(digest)
            return digest, area
    except NotFound:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / SNAPSHOT_FILE
        archive.write_bytes(data)
        await upload_file(client, area, SNAPSHOT_FILE, archive, staging=True, show_progress=show)
    if known is not None:
        known.add(digest)
    return digest, area


async def upload_code(ws: Session, source: Path) -> tuple[str, str]:
    """``source`` archived and uploaded once per content (a registered component's code);
    returns the digest and the staging area."""
    return await upload_snapshot(ws.client, source, ws.snapshots)


def _environment(env: str | EnvironmentLike | None) -> tuple[str | None, int | None, Any]:
    """The environment's name and version (registered) or its spec (inline)."""
    if env is None or isinstance(env, str):
        return env, None, None
    if env.version is None and not env.name.startswith("cairn-"):
        return None, None, JobEnvironment(name=None, spec=env.spec())
    return env.name, env.version, None


async def build_job(
    ws: Session,
    config: ScriptRunConfig,
    *,
    datastore: str | None = None,
    command: list[str] | None = None,
) -> tuple[JobSpec, str | None, int | None]:
    """The job spec of ``config`` with its snapshot and local inputs uploaded (those to
    ``datastore``, default the workspace's), ``command`` instead of its own argv when given,
    and its environment's name and version when it is a registered one."""
    if config.snapshot is not None:
        digest, area = config.snapshot
    else:
        digest, area = await upload_snapshot(ws.client, config.source_directory, ws.snapshots)
    env_name, env_version, inline = _environment(config.environment)
    inputs: list[JobInput] = []
    outputs: list[JobOutput] = []
    for binding in config.bindings:
        made = binding.job_binding()
        if isinstance(made, JobOutput):
            outputs.append(made)
        else:
            inputs.append(made)
    inputs += config.job_inputs
    inputs = [await _s3_input(ws, item) for item in inputs]
    for name, (local, mode) in config.local_inputs.items():
        inputs.append(await upload_local_input(ws, name, local, mode, datastore))
    outputs += config.job_outputs
    job = JobSpec(
        command=config.argv() if command is None else command,
        snapshot=digest,
        snapshot_area=area,
        environment=inline,
        inputs=inputs,
        outputs=outputs,
        env_vars=config.environment_variables,
        timeout_s=config.max_run_duration_seconds,
        max_attempts=config.max_attempts,
        priority=config.priority,
        gpus=config.gpus,
        secrets=config.secrets,
    )
    return job, env_name, env_version


async def build_submission(
    ws: Session,
    experiment_name: str,
    config: ScriptRunConfig,
    *,
    tags: dict[str, str] | None = None,
    display_name: str | None = None,
) -> SubmitJob:
    """``config`` as the ``SubmitJob`` that runs it (its code and local inputs uploaded, its
    experiment made), with a fresh run id; sent as it is, or stored by a schedule."""
    job, env_name, env_version = await build_job(ws, config)
    await ws.experiment_id(experiment_name)  # get-or-create, as start_logging does
    return SubmitJob(
        command_id=new_id(),
        run_id=new_id(),
        experiment_name=experiment_name,
        compute=config.compute_name,
        job=job,
        environment_name=env_name,
        environment_version=env_version,
        display_name=display_name,
        tags=tags or {},
    )


async def submit(
    ws: Session,
    experiment_name: str,
    config: ScriptRunConfig,
    *,
    tags: dict[str, str] | None = None,
    display_name: str | None = None,
) -> str:
    """Submit ``config`` as a new run of ``experiment_name``; returns the run id."""
    command = await build_submission(
        ws, experiment_name, config, tags=tags, display_name=display_name
    )
    await ws.send(command)
    return command.run_id


async def _s3_input(ws: Session, item: JobInput) -> JobInput:
    """An ``s3://`` URL input with the registered datastore of its bucket, which the agent
    reads it through (its credentials, never the agent's own)."""
    if item.url is None or not item.url.lower().startswith("s3://") or item.datastore:
        return item
    store, path = await resolve_s3_url(ws.client, item.url, f"input {item.name}")
    return msgspec.structs.replace(item, datastore=store, path=path)


async def upload_local_input(
    ws: Session, name: str, local: Path, mode: InputMode, datastore: str | None = None
) -> JobInput:
    """A local file or folder, uploaded once per content into the default datastore."""
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    base = local.parent if local.is_file() else local
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(base).as_posix().encode() + b"\0")
        h.update(await asyncio.to_thread(f.read_bytes))
    folder = f"job-inputs/{h.hexdigest()[:32]}"
    pairs = [(f, f"{folder}/{f.relative_to(base).as_posix()}") for f in files]
    store = datastore or await ws.default_datastore()
    await AsyncDatastores(ws).upload(store, pairs)
    path = pairs[0][1] if local.is_file() else folder
    return JobInput(name=name, mode=mode, datastore=store, path=path)


class _LogPrinter:
    """Writes LOGS chunks to ``out``, with a marker where a new attempt's output begins."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out, self.attempt = out, ""

    def __call__(self, msg: Any) -> None:
        n = (msg.headers or {}).get("Cairn-Attempt", "")
        if self.attempt and n != self.attempt:
            self.out(f"\n--- attempt {n} ---\n")
        self.out(msg.data.decode("utf-8", errors="replace"))
        self.attempt = n


async def follow(
    ws: Session,
    run_id: str,
    *,
    out: Callable[[str], None] | None = None,
    timeout: float | None = None,
    poll_s: float = 0.25,
    display: WaitDisplay | None = None,
) -> dict[str, Any]:
    """Wait for the run to end, printing its output to ``out`` as it arrives when given;
    returns the run's details. ``display`` is told where the run is on every poll (its place
    in the queue, or that no agent serves its compute target) and how it ended."""
    js = ws.conn.js
    subject = subjects.logs(ws.name, run_id)
    printed = 0
    wanted = 0
    caught_up = asyncio.Event()
    if out is not None and display is not None:
        out = display.wrap(out)
    show = _LogPrinter(out) if out is not None else None
    where = Whereabouts(ws, run_id) if display is not None else None
    details: dict[str, Any] | None = None

    async def on_log(msg: Any) -> None:
        nonlocal printed
        printed = max(printed, msg.metadata.sequence.stream)
        if show is not None:
            show(msg)
        if wanted and printed >= wanted:
            caught_up.set()

    sub = await js.subscribe(subject, cb=on_log, ordered_consumer=True) if out else None
    deadline = None if timeout is None else time.monotonic() + timeout
    ended = False
    try:
        while True:
            details = (await ws.client.ask(GetRun(run_id=run_id, min_seq=ws.seen_seq))).data
            status = details["status"]
            if status in TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {status}")
            if display is not None and where is not None:
                display.note(await where.describe(status))
            await asyncio.sleep(poll_s)
        if sub is not None:  # print what was logged before the end
            with contextlib.suppress(Exception):
                wanted = (await js.get_last_msg("LOGS", subject)).seq or 0
                if printed < wanted:
                    await asyncio.wait_for(caught_up.wait(), 5)
        ended = True
    finally:
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if display is not None:
            display.end(details if ended else None)
    return details


async def print_logs(ws: Session, run_id: str, out: Callable[[str], None]) -> int:
    """Print what the LOGS stream holds for the run now; returns the number of chunks."""
    js = ws.conn.js
    subject = subjects.logs(ws.name, run_id)
    try:
        last = (await js.get_last_msg("LOGS", subject)).seq or 0
    except Exception:  # nothing logged (yet)
        return 0
    sub = await js.subscribe(subject, ordered_consumer=True)
    show, chunks = _LogPrinter(out), 0
    try:
        while True:
            msg = await sub.next_msg(timeout=5)
            show(msg)
            chunks += 1
            if msg.metadata.sequence.stream >= last:
                return chunks
    finally:
        await sub.unsubscribe()


def print_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
