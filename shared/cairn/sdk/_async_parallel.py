"""The core calls of parallel runs (``cairn.proto.parallel``): a worker's mini-batch command
sent, a page of a parallel run read, the driver's arguments for a worker and a gather step;
and a batch endpoint's invocation, a pipeline run of its deployment's workers over an input
(``cairn.proto.batch``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.proto import subjects
from cairn.proto.assets import GetAsset
from cairn.proto.batch import (
    BATCH_INPUT,
    BATCH_OUTPUT,
    BATCH_STEP,
    DRIVER,
    GetBatchEndpoint,
    batch_jobs_path,
    batch_pipeline,
    batch_routable,
    chosen_deployment,
    dataset_ref,
    gather_args,
    invocation,
    worker_args,
)
from cairn.proto.commands import QueryResult
from cairn.proto.jobs import JobInput
from cairn.proto.parallel import (
    CommitMiniBatch,
    GetParallelRun,
    PrepareMiniBatches,
    TakeMiniBatch,
)
from cairn.sdk._jobs import upload_local_input
from cairn.sdk._session import Session, new_id

__all__ = [
    "BATCH_INPUT",
    "BATCH_OUTPUT",
    "BATCH_STEP",
    "DRIVER",
    "batch_input",
    "batch_pipeline",
    "batch_scoring_uri",
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


async def batch_input(ws: Session, given: str) -> JobInput:
    """``--input`` of a batch invocation: a registered dataset version (``azureml:name:3``,
    ``name@latest``...) or a local file or folder (uploaded once per content)."""
    local = Path(given)
    if local.exists():
        return await upload_local_input(ws, BATCH_INPUT, local, "download")
    name, version = dataset_ref(given, "--input (a local file or folder, or a dataset)")
    found = await ws.client.ask(GetAsset(asset_kind="dataset", name=name, version=version))
    row = found.data
    return JobInput(name=BATCH_INPUT, dataset=name, version=int(row["version"]), as_dataset=True)


def batch_scoring_uri(ws: Session, name: str) -> str | None:
    """Batch endpoint ``name``'s address on the gateway (``gateway_url``, else
    ``gateway_host:gateway_port``): ``POST`` invokes it with a member's token. None for a
    name no route can match (``/`` in it): such an endpoint is invoked from the SDK or CLI."""
    if not batch_routable(name):
        return None
    settings = ws.settings
    base = settings.gateway_url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    return base.rstrip("/") + batch_jobs_path(ws.name, name)


async def get_batch_endpoint(ws: Session, name: str) -> dict[str, Any]:
    """Batch endpoint ``name``: its default deployment, its deployments' specs and its
    ``scoring_uri``."""
    row = dict((await ws.client.ask(GetBatchEndpoint(name=name))).data)
    return {**row, "scoring_uri": batch_scoring_uri(ws, name)}


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
    chosen, spec = chosen_deployment(name, row, deployment)
    data = await batch_input(ws, given)
    experiment = experiment_name or subjects.name_to_id(name)
    await ws.experiment_id(experiment)
    command = invocation(
        name, chosen, spec, data, experiment_name=experiment, command_id=new_id(), run_id=new_id()
    )
    await ws.send(command)
    return command.run_id
