"""Batch endpoints: a name whose deployments score data in batches, each invocation a pipeline
run of one parallel run step (``cairn.proto.parallel``).

A batch endpoint (``cairn.ev.<ws>.batch_endpoint.<name id>``, the pipelines service) is created
once (``CreateBatchEndpoint``, ``batch.endpoint.create``); ``SetBatchDeployment``
(``batch.deployment.set``) adds a deployment or replaces its spec, the first one becoming the
default (``make_default`` moves it). A deployment's spec is what every invocation runs: the
job template (code snapshot, environment, variables) of its workers and its parallel
settings. ``GetBatchEndpoint`` (``batch.endpoint.get``) reads it back. Invoking one
(``cairn batch-endpoint invoke``) submits a pipeline run (``pipeline.submit``) of its workers
and gather step over the given input.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import msgspec

from cairn.proto._base import Count, Id, Int64, Key, Name, TagKey, TagValue, Text
from cairn.proto.commands import Command, Query
from cairn.proto.errors import InvalidInput, NotFound, Unsupported
from cairn.proto.jobs import JobInput, JobOutput, JobSpec
from cairn.proto.pipelines import PipelineOutput, PipelineSpec, PipelineStep, SubmitPipeline

__all__ = [
    "BATCH_COMMAND_TYPES",
    "BATCH_INPUT",
    "BATCH_OUTPUT",
    "BATCH_QUERY_TYPES",
    "BATCH_STEP",
    "DRIVER",
    "BatchDeploymentSpec",
    "CreateBatchEndpoint",
    "GetBatchEndpoint",
    "SetBatchDeployment",
    "batch_jobs_path",
    "batch_pipeline",
    "batch_routable",
    "chosen_deployment",
    "dataset_ref",
    "gather_args",
    "invocation",
    "worker_args",
]


class BatchDeploymentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an invocation of a deployment runs: ``job`` is its workers' job without command
    or inputs (the code snapshot, the inline environment, the variables), on ``compute``;
    ``instance_count * max_concurrency_per_instance`` workers score ``mini_batch_size`` files
    at a time with ``scoring_script``; the results go to ``output_file_name``."""

    job: JobSpec
    compute: Key = "local"
    environment_name: Name | None = None
    environment_version: Count | None = None
    scoring_script: Text
    instance_count: Count = 1
    max_concurrency_per_instance: Count = 1
    mini_batch_size: Count = 10
    output_action: Literal["append_row", "summary_only"] = "append_row"
    output_file_name: Text = "predictions.csv"
    error_threshold: Int64 = -1
    max_retries: Count = 3
    timeout_s: float = 30.0
    logging_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class CreateBatchEndpoint(Command, frozen=True, kw_only=True, tag=True):
    VERB = "batch.endpoint.create"
    name: Name
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class SetBatchDeployment(Command, frozen=True, kw_only=True, tag=True):
    """Add deployment ``name`` to endpoint ``endpoint`` (or replace its spec); the first one
    is the default, ``make_default`` makes this one the default."""

    VERB = "batch.deployment.set"
    endpoint: Name
    name: Id
    spec: BatchDeploymentSpec
    make_default: bool = False


class GetBatchEndpoint(Query, frozen=True, kw_only=True, tag=True):
    """An endpoint with its deployments' specs and its default deployment."""

    NAME = "batch.endpoint.get"
    name: Name


BATCH_COMMAND_TYPES: tuple[type[Command], ...] = (CreateBatchEndpoint, SetBatchDeployment)
BATCH_QUERY_TYPES: tuple[type[Query], ...] = (GetBatchEndpoint,)


def batch_routable(endpoint: str) -> bool:
    """Whether batch endpoint ``endpoint`` has an HTTP address. A name with ``/`` in it
    matches no route even percent-encoded (the server decodes ``%2F`` before routing); the
    router decodes path parameters once more, so a ``%`` would not come back as sent; and
    ``.`` and ``..`` are folded away by clients as path steps."""
    return not ("/" in endpoint or "%" in endpoint or endpoint in (".", ".."))


def batch_jobs_path(workspace: str, endpoint: str) -> str:
    """The path of batch endpoint ``endpoint``'s scoring address on the gateway (its
    ``scoring_uri`` past the gateway's URL): ``POST`` invokes it, ``GET <path>/<job>`` polls
    one invocation. Each segment is percent-encoded (UTF-8), so the path is ASCII and valid
    in a URL and in a ``Location`` header whatever the name; ``Unsupported`` for a name that
    no route can match (:func:`batch_routable`)."""
    if not batch_routable(endpoint):
        raise Unsupported(
            f"batch endpoint {endpoint!r:.100} has no HTTP address: its name is '.' or '..'"
            " or has '/' or '%' in it (invoke it with cairn batch-endpoint invoke)"
        )
    return f"/batch-endpoints/{quote(workspace, safe='')}/{quote(endpoint, safe='')}/jobs"


def dataset_ref(given: str, where: str) -> tuple[str, int | None]:
    """A registered dataset version named as ``azureml:<name>:<version>``, ``<name>:<version>``,
    ``<name>@latest`` or ``<name>``: its name and version (``None``: the latest). ``where``
    names the argument in the error."""
    text = given.removeprefix("azureml:")
    name, sep, version = text.partition(":")
    if not sep:
        name, _, label = text.partition("@")
        if label not in ("", "latest"):
            raise InvalidInput(f"{where} {given!r}: a dataset's version is a number or latest")
        version = ""
    if not name or (version and not version.isdigit()) or (sep and not version):
        raise InvalidInput(f"{where} {given!r}: a registered dataset is azureml:<name>:<version>")
    return name, int(version) if version else None


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


def chosen_deployment(
    endpoint: str, row: dict[str, Any], deployment: str | None
) -> tuple[str, BatchDeploymentSpec]:
    """The deployment an invocation of ``endpoint`` runs (``row`` is ``GetBatchEndpoint``'s
    answer): ``deployment``, else the endpoint's default; its name and spec."""
    chosen = deployment or row["default_deployment"]
    if chosen is None:
        raise NotFound(f"batch endpoint {endpoint!r} has no deployment yet")
    if chosen not in row["deployments"]:
        raise NotFound(f"batch endpoint {endpoint!r} has no deployment {chosen!r:.100}")
    return chosen, msgspec.convert(row["deployments"][chosen], BatchDeploymentSpec)


def invocation(
    endpoint: str,
    deployment: str,
    spec: BatchDeploymentSpec,
    data: JobInput,
    *,
    experiment_name: str,
    command_id: str,
    run_id: str,
) -> SubmitPipeline:
    """The command of one invocation of ``endpoint``'s ``deployment`` over ``data``, the same
    from the SDK and from the gateway: a pipeline run tagged with both names."""
    return SubmitPipeline(
        command_id=command_id,
        run_id=run_id,
        experiment_name=experiment_name,
        pipeline=batch_pipeline(spec, data),
        display_name=f"{endpoint}-{deployment}",
        tags={"batch_endpoint": endpoint, "batch_deployment": deployment},
    )
