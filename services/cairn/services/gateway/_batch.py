"""A batch endpoint's HTTP address, in the Azure ML v2 REST shape:
``POST /batch-endpoints/<workspace>/<endpoint>/jobs`` invokes it, ``GET .../jobs/<name>``
polls one invocation.

A batch endpoint's ``auth_mode`` is ``aad_token`` (the only one Cairn accepts, see
``cairn.sdk._batchfile``): the caller shows a Cairn API token (``Authorization: Bearer
<token>``) or a studio session, and the invocation is theirs. The gateway asks and sends over
that person's own connection (:mod:`._pool`), exactly what ``cairn batch-endpoint invoke``
sends: the endpoint (``GetBatchEndpoint``), the input's dataset or datastore (``GetAsset``),
the experiment (``CreateExperiment``, get-or-create) and the pipeline run
(``SubmitPipeline``, built by :func:`cairn.proto.batch.invocation`). The services check
membership and roles; the gateway adds no authority of its own. Batch endpoints have no keys:
a bearer value that is no Cairn token is 401.

The body::

    {"properties": {"InputData": {"<any name>": {"JobInputType": "UriFolder" | "UriFile",
                                               "Uri": "...", "Mode": "Download"}}}}

names one input, whose ``Uri`` is a datastore path (``azureml://datastores/<name>/paths/
<path>``), a registered dataset version (``azureml:<name>:<version>``, ``azureml:<name>@latest``)
or an ``https://`` file (``UriFile``). The deployment is the endpoint's default, or the one the
``azureml-model-deployment`` header names. ``JobInputType`` is checked against what the
``Uri`` names: ``UriFile`` is one file (an ``https://`` URL, a dataset version of one file,
a datastore path not ending in ``/``), ``UriFolder`` no ``https://`` URL (one file).
Every key is honoured or refused by name (400);
an unknown endpoint, deployment, dataset or datastore is 404; a path that leaves its
datastore (``..``, absolute, encoded) is 400.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from cairn.data import check_url
from cairn.errors import InvalidInput, NotFound, Unavailable, Unsupported
from cairn.proto import subjects
from cairn.proto.assets import GetAsset
from cairn.proto.batch import (
    BATCH_INPUT,
    BATCH_OUTPUT,
    BATCH_STEP,
    GetBatchEndpoint,
    batch_jobs_path,
    chosen_deployment,
    dataset_ref,
    invocation,
)
from cairn.proto.commands import CreateExperiment, GetRun
from cairn.proto.jobs import JobInput
from cairn.proto.paths import validate_run_path
from cairn.proto.pipelines import GetPipeline
from cairn.services.gateway._app import ask, send
from cairn.services.gateway._auth import principal_of

__all__ = ["BATCH_ROUTES", "DEPLOYMENT_HEADER", "IDEMPOTENCY_HEADERS", "parse_input"]

#: the header naming a deployment other than the endpoint's default (as Azure ML's)
DEPLOYMENT_HEADER = "azureml-model-deployment"
#: the headers whose value makes a POST idempotent (the first one present counts)
IDEMPOTENCY_HEADERS = ("idempotency-key", "x-ms-client-request-id")
_DATASTORE_URI = "azureml://datastores/"
#: the input types a batch invocation reads (as Azure ML spells them, or as its YAML does)
_KINDS = {"urifolder": "UriFolder", "urifile": "UriFile"}
_KINDS |= {"uri_folder": "UriFolder", "uri_file": "UriFile"}
Mode = Literal["download", "mount"]
_MODES: dict[str, Mode] = {"download": "download", "readonlymount": "mount", "ro_mount": "mount"}


def _object(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise Unsupported(
            f"{where}.{unknown[0]:.100}: not a key of a batch invocation"
            f" (known: {', '.join(sorted(allowed))})"
        )
    return value


def _datastore_input(uri: str, mode: Mode) -> JobInput:
    """``azureml://datastores/<name>/paths/<path>``: a path inside datastore ``name`` (one
    that stays inside it)."""
    rest = uri.removeprefix(_DATASTORE_URI)
    name, sep, path = rest.partition("/paths/")
    if not sep or not name or "/" in name:
        raise InvalidInput("a datastore path is azureml://datastores/<name>/paths/<path>")
    subjects.validate_token(name, "datastore name")
    path = path.rstrip("/")
    if not path:
        raise InvalidInput("name a path in the datastore")
    validate_run_path(path)
    return JobInput(name=BATCH_INPUT, mode=mode, datastore=name, path=path)


def _datastore_item(uri: str, mode: Mode, kind: str, where: str) -> JobInput:
    """A datastore path as the input at ``where`` (``UriFile``: no folder's trailing ``/``)."""
    if kind == "UriFile" and uri.endswith("/"):
        raise InvalidInput(
            f"{where}.Uri {uri!r:.200} ends with '/', a folder: JobInputType UriFile names"
            " one file (UriFolder reads a folder)"
        )
    try:
        return _datastore_input(uri, mode)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}.Uri {uri!r:.200}: {exc.message}") from exc


def parse_input(body: Any) -> JobInput:
    """The invocation's input from the request's body (its datastore or dataset not yet
    looked up); ``InvalidInput`` naming the field for anything else."""
    return _parsed(body)[0]


def _parsed(body: Any) -> tuple[JobInput, str, str]:
    """:func:`parse_input`, with the ``JobInputType`` given (``UriFile``/``UriFolder``) and
    where the input is in the body."""
    top = _object(body, "the body", {"properties"})
    if "properties" not in top:
        raise InvalidInput('properties is required: {"properties": {"InputData": {...}}}')
    props = _object(top["properties"], "properties", {"InputData"})
    if "InputData" not in props:
        raise InvalidInput("properties.InputData is required: the input to score")
    inputs = props["InputData"]
    if not isinstance(inputs, dict) or len(inputs) != 1:
        raise InvalidInput("properties.InputData must be a JSON object naming one input")
    ((label, given),) = inputs.items()
    where = f"properties.InputData.{label:.100}"
    item = _object(given, where, {"JobInputType", "Uri", "Mode"})
    kind_given = item.get("JobInputType")
    kind = _KINDS.get(kind_given.lower()) if isinstance(kind_given, str) else None
    if kind is None:
        raise InvalidInput(f"{where}.JobInputType must be UriFolder or UriFile")
    uri = item.get("Uri")
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInput(f"{where}.Uri is required: a datastore path, a dataset or a URL")
    mode_given = item.get("Mode", "Download")
    mode = _MODES.get(mode_given.lower()) if isinstance(mode_given, str) else None
    if mode is None:
        raise InvalidInput(f"{where}.Mode must be Download or ReadOnlyMount")
    uri = uri.strip()
    if uri.startswith(_DATASTORE_URI):
        return _datastore_item(uri, mode, kind, where), kind, where
    if uri.startswith("azureml://"):
        raise Unsupported(
            f"{where}.Uri {uri!r:.200}: of azureml:// URIs Cairn reads"
            " azureml://datastores/<name>/paths/<path> alone"
        )
    if uri.startswith("azureml:"):
        name, version = dataset_ref(uri, f"{where}.Uri")
        return JobInput(name=BATCH_INPUT, mode=mode, dataset=name, version=version), kind, where
    if uri.lower().startswith("https://"):
        if kind != "UriFile":
            raise Unsupported(f"{where}.Uri: an https:// URL names one file (JobInputType UriFile)")
        check_url(uri, f"{where}.Uri")  # a host, no credentials in it
        return JobInput(name=BATCH_INPUT, mode=mode, url=uri), kind, where
    raise InvalidInput(
        f"{where}.Uri {uri!r:.200}: a datastore path (azureml://datastores/<name>/paths/<path>),"
        " a registered dataset (azureml:<name>:<version>) or an https:// URL"
    )


async def _resolved(
    request: Request[Any, Any, Any], workspace: str, data: JobInput, kind: str, where: str
) -> JobInput:
    """``data`` with its datastore known to exist, or its dataset version pinned (as the SDK
    does); ``NotFound`` otherwise. A dataset given as ``UriFile`` must be one file."""
    if data.datastore is not None:
        await ask(request, workspace, GetAsset(asset_kind="datastore", name=data.datastore))
        return data
    if data.dataset is not None:
        found = await ask(
            request,
            workspace,
            GetAsset(asset_kind="dataset", name=data.dataset, version=data.version),
        )
        version = int(found.data["version"])
        spec = found.data.get("spec") or {}
        files = len(spec.get("files") or ()) + len(spec.get("url_files") or ())
        if kind == "UriFile" and files != 1:
            raise InvalidInput(
                f"{where}.JobInputType UriFile names one file: dataset"
                f" {data.dataset}:{version} has {files} (UriFolder reads them all)"
            )
        return msgspec.structs.replace(data, version=version, as_dataset=True)
    return data


async def _decode(request: Request[Any, Any, Any]) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput('the body is empty: send {"properties": {"InputData": {...}}}')
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None


def _job(
    workspace: str, endpoint: str, found: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    """A job as the REST API shows it: its name, status, and where its predictions are."""
    run_id = found["run_id"]
    tags = run.get("tags") or {}
    scored = next((s for s in found.get("steps", ()) if s.get("step") == BATCH_STEP), None)
    output_run = scored.get("run_id") if scored else None
    outputs = {
        BATCH_OUTPUT: {
            "run_id": output_run,
            "files": f"/api/w/{workspace}/runs/{output_run}/files" if output_run else None,
        }
    }
    return {
        "id": run_id,
        "name": run_id,
        "status": found["status"],
        "properties": {
            "status": found["status"],
            "endpointName": endpoint,
            "deploymentName": tags.get("batch_deployment"),
            "experimentName": found.get("experiment_name"),
            "displayName": found.get("display_name"),
            "error": found.get("error"),
            "submittedAt": found.get("submitted_at"),
            "endedAt": found.get("ended_at"),
            "jobUri": f"{batch_jobs_path(workspace, endpoint)}/{run_id}",
            "outputs": outputs,
        },
    }


def _ids(request: Request[Any, Any, Any], workspace: str, endpoint: str) -> tuple[str, str, str]:
    """The experiment command's, the submit's and the run's ids: derived from the caller's
    idempotency key (``Idempotency-Key`` or Azure's ``x-ms-client-request-id``) with their
    person, the workspace and the endpoint, so a retried POST answers the job the first
    made (and one caller's key cannot name another's job); fresh ones without a key."""
    key = next((request.headers.get(h) for h in IDEMPOTENCY_HEADERS if request.headers.get(h)), "")
    if not key:
        return uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    if len(key) > 200:
        raise InvalidInput(f"{IDEMPOTENCY_HEADERS[0]}: at most 200 characters")
    scope = "\0".join(("batch", principal_of(request).person, workspace, endpoint, key))
    experiment, command, run = (
        uuid.uuid5(uuid.NAMESPACE_URL, f"{scope}\0{part}").hex for part in "ecr"
    )
    return experiment, command, run


@post("/batch-endpoints/{workspace:str}/{endpoint:str}/jobs", status_code=200)
async def invoke_batch(
    request: Request[Any, Any, Any], workspace: FromPath[str], endpoint: FromPath[str]
) -> Response[Any]:
    """Invoke the endpoint as the caller: the new job (a pipeline run), ``Location`` its
    address to poll. Everything that can refuse is checked before the first command is
    sent, and the answer is built from the accepted command, so nothing fails after the
    job exists (a client retrying a 5xx would start the whole fan-out again)."""
    subjects.validate_token(workspace, "workspace")
    jobs_path = batch_jobs_path(workspace, endpoint)
    experiment_command, command_id, run_id = _ids(request, workspace, endpoint)
    data, kind, where = _parsed(await _decode(request))
    deployment = request.headers.get(DEPLOYMENT_HEADER) or None
    row = (await ask(request, workspace, GetBatchEndpoint(name=endpoint))).data
    chosen, spec = chosen_deployment(endpoint, row, deployment)
    data = await _resolved(request, workspace, data, kind, where)
    experiment = subjects.name_to_id(endpoint)
    command = invocation(
        endpoint,
        chosen,
        spec,
        data,
        experiment_name=experiment,
        command_id=command_id,
        run_id=run_id,
    )
    await send(request, workspace, CreateExperiment(command_id=experiment_command, name=experiment))
    accepted = await send(request, workspace, command)
    found: dict[str, Any] = {"run_id": run_id, "status": "NotStarted"}
    found["experiment_name"] = experiment
    if accepted.replayed:  # a retried POST: the job as it stands now, if the read has it
        with contextlib.suppress(NotFound, Unavailable):
            found = (await ask(request, workspace, GetPipeline(run_id=run_id))).data
    job = _job(workspace, endpoint, found, {"tags": command.tags})
    return Response(job, status_code=200, headers={"Location": f"{jobs_path}/{run_id}"})


@get("/batch-endpoints/{workspace:str}/{endpoint:str}/jobs/{job:str}")
async def batch_job(
    request: Request[Any, Any, Any],
    workspace: FromPath[str],
    endpoint: FromPath[str],
    job: FromPath[str],
) -> Any:
    """One invocation of the endpoint: its status and where its predictions are."""
    subjects.validate_token(job, "job name")
    try:
        run = (await ask(request, workspace, GetRun(run_id=job))).data
        found = (await ask(request, workspace, GetPipeline(run_id=job))).data
    except NotFound:
        raise NotFound(f"no job {job!r} of batch endpoint {endpoint!r}") from None
    if (run.get("tags") or {}).get("batch_endpoint") != endpoint:
        raise NotFound(f"no job {job!r} of batch endpoint {endpoint!r}")
    return _job(workspace, endpoint, found, run)


BATCH_ROUTES: list[Any] = [invoke_batch, batch_job]
