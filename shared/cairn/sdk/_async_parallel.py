"""The core calls of parallel runs (``cairn.proto.parallel``): a worker's mini-batch command
sent, a page of a parallel run read, the driver's arguments for a worker and a gather step;
and a batch endpoint's invocation, a pipeline run of its deployment's workers over an input
(``cairn.proto.batch``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from cairn.errors import InvalidInput, NotFound
from cairn.proto import subjects
from cairn.proto.assets import GetAsset
from cairn.proto.batch import BatchDeploymentSpec, GetBatchEndpoint
from cairn.proto.commands import QueryResult
from cairn.proto.jobs import JobInput, JobOutput
from cairn.proto.parallel import (
    CommitMiniBatch,
    GetParallelRun,
    PrepareMiniBatches,
    TakeMiniBatch,
)
from cairn.proto.pipelines import PipelineOutput, PipelineSpec, PipelineStep, SubmitPipeline
from cairn.sdk._jobs import upload_local_input
from cairn.sdk._session import Session, new_id

__all__ = [
    "batch_input",
    "batch_pipeline",
    "gather_args",
    "get_batch_endpoint",
    "invoke_batch_endpoint",
    "parallel_page",
    "send_worker",
    "worker_args",
]


async def send_worker(
    ws: Session, command: PrepareMiniBatches | TakeMiniBatch | CommitMiniBatch
) -> dict[str, Any]:
    """Send a worker's mini-batch command; its answer's data (``{}`` for ``Accepted``)."""
    reply = await ws.client.send_any(command)
    data = reply.data if isinstance(reply, QueryResult) else None
    return dict(data) if isinstance(data, dict) else {}


async def parallel_page(ws: Session, query: GetParallelRun) -> dict[str, Any]:
    """One page of a parallel run (its counts and committed rows from ``from_batch``)."""
    return dict((await ws.client.ask(query)).data)


def _flags(options: dict[str, str]) -> list[str]:
    return [part for key, value in options.items() for part in (f"--{key}", value)]


def worker_args(
    step: str,
    *,
    entry_script: str,
    input_name: str,
    kind: str,
    mini_batch_size: str,
    output_action: str,
    error_threshold: int,
    run_invocation_timeout: float,
    run_max_try: int,
    logging_level: str,
    allowed_failed_count: int | None = None,
    allowed_failed_percent: float | None = None,
) -> list[str]:
    """The driver's arguments for a worker (``python -m cairn.sdk._parallel_driver ...``);
    the entry script's own arguments go after them, behind ``--``."""
    options = {
        "step": step,
        "entry-script": entry_script,
        "input": input_name,
        "kind": kind,
        "mini-batch-size": mini_batch_size,
        "output-action": output_action,
        "error-threshold": str(error_threshold),
        "run-invocation-timeout": str(run_invocation_timeout),
        "run-max-try": str(run_max_try),
        "logging-level": logging_level,
    }
    if allowed_failed_count is not None:
        options["allowed-failed-count"] = str(allowed_failed_count)
    if allowed_failed_percent is not None:
        options["allowed-failed-percent"] = str(allowed_failed_percent)
    return ["worker", *_flags(options)]


def gather_args(step: str, *, file_name: str, output_action: str) -> list[str]:
    """The driver's arguments for the gather step, but ``--output-dir``."""
    options = {"step": step, "file-name": file_name, "output-action": output_action}
    return ["gather", *_flags(options)]


DRIVER = ["python", "-m", "cairn.sdk._parallel_driver"]
#: the step name of a batch endpoint's invocation, its input's and its output's names
BATCH_STEP, BATCH_INPUT, BATCH_OUTPUT = "score", "data", "predictions"


async def batch_input(ws: Session, given: str) -> JobInput:
    """``--input`` of a batch invocation: a registered dataset version (``azureml:name:3``,
    ``name@latest``...) or a local file or folder (uploaded once per content)."""
    local = Path(given)
    if local.exists():
        return await upload_local_input(ws, BATCH_INPUT, local, "download")
    text = given.removeprefix("azureml:")
    name, sep, version = text.partition(":")
    if not sep:
        name, _, label = text.partition("@")
        if label not in ("", "latest"):
            raise InvalidInput(f"--input {given!r}: a dataset's version is a number or latest")
        version = ""
    if not name or (version and not version.isdigit()):
        raise InvalidInput(
            f"--input {given!r}: a local file or folder, or a registered dataset"
            " (azureml:<name>:<version>)"
        )
    found = await ws.client.ask(
        GetAsset(asset_kind="dataset", name=name, version=int(version) if version else None)
    )
    row = found.data
    return JobInput(name=BATCH_INPUT, dataset=name, version=int(row["version"]), as_dataset=True)


def batch_pipeline(spec: BatchDeploymentSpec, data: JobInput) -> PipelineSpec:
    """The pipeline of one invocation: the deployment's workers over ``data`` (mini-batches of
    files) and the gather step writing ``predictions``."""
    count = spec.instance_count * spec.max_concurrency_per_instance
    args = worker_args(
        BATCH_STEP,
        entry_script=spec.scoring_script,
        input_name=BATCH_INPUT,
        kind="file",
        mini_batch_size=str(spec.mini_batch_size),
        output_action=spec.output_action,
        error_threshold=spec.error_threshold,
        run_invocation_timeout=spec.timeout_s,
        run_max_try=spec.max_retries,
        logging_level=spec.logging_level,
    )
    workers = [
        PipelineStep(
            name=f"{BATCH_STEP}-w{i}",
            compute=spec.compute,
            job=msgspec.structs.replace(
                spec.job, command=[*DRIVER, *args, "--"], inputs=[*spec.job.inputs, data]
            ),
            environment_name=spec.environment_name,
            environment_version=spec.environment_version,
            allow_reuse=False,  # each invocation scores its input (see ParallelRunStep)
        )
        for i in range(count)
    ]
    out = JobOutput(name=BATCH_OUTPUT)
    gather = gather_args(
        BATCH_STEP, file_name=spec.output_file_name, output_action=spec.output_action
    )
    gather_step = PipelineStep(
        name=BATCH_STEP,
        compute=spec.compute,
        job=msgspec.structs.replace(
            spec.job,
            command=[*DRIVER, *gather, "--output-dir", f"${{{{outputs.{BATCH_OUTPUT}}}}}"],
            outputs=[out],
        ),
        environment_name=spec.environment_name,
        environment_version=spec.environment_version,
        depends_on=[w.name for w in workers],
        allow_reuse=False,
    )
    return PipelineSpec(
        steps=[*workers, gather_step],
        outputs=[PipelineOutput(name=BATCH_OUTPUT, step=BATCH_STEP, output=BATCH_OUTPUT)],
    )


async def get_batch_endpoint(ws: Session, name: str) -> dict[str, Any]:
    """Batch endpoint ``name``: its default deployment and its deployments' specs."""
    return dict((await ws.client.ask(GetBatchEndpoint(name=name))).data)


async def invoke_batch_endpoint(
    ws: Session,
    name: str,
    given: str,
    *,
    deployment: str | None = None,
    experiment_name: str | None = None,
) -> str:
    """Run batch endpoint ``name``'s deployment (its default unless named) over ``given``:
    the pipeline run's id."""
    row = await get_batch_endpoint(ws, name)
    chosen = deployment or row["default_deployment"]
    if chosen is None:
        raise NotFound(f"batch endpoint {name!r} has no deployment yet")
    if chosen not in row["deployments"]:
        raise NotFound(f"batch endpoint {name!r} has no deployment {chosen!r}")
    spec = msgspec.convert(row["deployments"][chosen], BatchDeploymentSpec)
    pipeline = batch_pipeline(spec, await batch_input(ws, given))
    experiment = experiment_name or subjects.name_to_id(name)
    await ws.experiment_id(experiment)
    command = SubmitPipeline(
        command_id=new_id(),
        run_id=new_id(),
        experiment_name=experiment,
        pipeline=pipeline,
        display_name=f"{name}-{chosen}",
        tags={"batch_endpoint": name, "batch_deployment": chosen},
    )
    await ws.send(command)
    return command.run_id
