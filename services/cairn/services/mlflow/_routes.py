"""The MLflow API as Litestar routes: ``/api/2.0/mlflow/...`` (and ``/ajax-api/2.0/mlflow/...``)
for tracking, ``/api/2.0/mlflow-artifacts/artifacts/...`` for artifacts (what
``mlflow server --serve-artifacts`` answers). The gateway mounts them for the caller
(:func:`mlflow_routes` with its resolver), an agent for a job's attempt.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from litestar import HttpMethod, Request, Response, route
from litestar.exceptions import HTTPException
from litestar.response import Stream

from cairn.data import blob_chunks, upload_file
from cairn.errors import CairnError, InvalidName
from cairn.log import get_logger
from cairn.proto.artifacts import GetRunFile, ListRunFiles
from cairn.proto.paths import validate_run_path
from cairn.services.mlflow._api import call
from cairn.services.mlflow._tracker import MlflowError, Tracker, error_body

__all__ = ["Resolve", "mlflow_routes"]

#: who answers a request: its Tracker, given the request (the gateway: the caller's
#: connection in the workspace the path names, or the default one)
Resolve = Callable[[Request[Any, Any, Any]], Awaitable[Tracker]]
log = get_logger("cairn.mlflow")
_METHODS = [HttpMethod.GET, HttpMethod.POST, HttpMethod.PATCH, HttpMethod.DELETE, HttpMethod.PUT]
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


def _error(exc: Exception) -> Response[Any]:
    if isinstance(exc, HTTPException):  # the framework's own (a caller not signed in)
        raise exc
    if isinstance(exc, (MlflowError, CairnError)):
        status, body = error_body(exc)
    else:  # a fault here, not the caller's: logged, and told without its details
        log.error("mlflow_request_failed", error=repr(exc))
        status, body = 500, {"error_code": "INTERNAL_ERROR", "message": "internal error"}
    return Response(body, status_code=status)


async def _request_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    req: dict[str, Any] = dict(request.query_params)
    if request.method in ("POST", "PATCH"):
        raw = await request.body()
        if raw.strip():
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise MlflowError("MALFORMED_REQUEST", f"the body is not JSON: {exc}", 400) from exc
            if not isinstance(body, dict):
                raise MlflowError("MALFORMED_REQUEST", "the body is not a JSON object", 400)
            req.update(body)
    return req


def _artifact_path(path: str) -> tuple[str, str]:
    """(run id, run file path) of ``<experiment>/<run>/artifacts[/<path>]``."""
    parts = path.strip("/").split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts":
        raise MlflowError(
            "INVALID_PARAMETER_VALUE",
            f"artifact path {path!r:.200} is not <experiment>/<run>/artifacts/<path>",
            400,
        )
    return parts[1], parts[3] if len(parts) == 4 else ""


async def _put(t: Tracker, path: str, request: Request[Any, Any, Any]) -> dict[str, Any]:
    run_id, name = _artifact_path(path)
    try:
        validate_run_path(name)
    except InvalidName as exc:
        raise MlflowError("INVALID_PARAMETER_VALUE", exc.message, 400) from None
    fd, tmp = tempfile.mkstemp(prefix="mlflow-artifact-")
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
        await upload_file(t.client, run_id, name, Path(tmp), show_progress=False)
    finally:
        os.unlink(tmp)
    return {}


async def _list(t: Tracker, path: str) -> dict[str, Any]:
    run_id, prefix = _artifact_path(path)
    prefix = prefix.strip("/")
    base = f"{prefix}/" if prefix else ""
    files = (await t.ask(ListRunFiles(run_id=run_id, prefix=base))).data
    found: dict[str, dict[str, Any]] = {}
    for f in files:
        rest = f["path"][len(base) :]
        head, slash, _ = rest.partition("/")
        if slash:
            found.setdefault(head, {"path": head, "is_dir": True})
        else:
            found[head] = {"path": head, "is_dir": False, "file_size": int(f["size"])}
    return {"files": list(found.values())}


async def _get(t: Tracker, path: str) -> Stream:
    run_id, name = _artifact_path(path)
    info = (await t.ask(GetRunFile(run_id=run_id, path=name))).data
    size = int(info["size"])

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in blob_chunks(t.client, info["digest"], size):
            yield chunk

    return Stream(
        chunks(),
        media_type="application/octet-stream",
        headers={"content-length": str(size), "x-content-type-options": "nosniff"},
    )


def mlflow_routes(resolve: Resolve, base: str = "") -> list[Any]:
    """The routes, under ``base`` (a path prefix that may name path parameters the resolver
    reads, such as ``/mlflow/{workspace:str}``)."""

    @route(
        [f"{base}/api/2.0/mlflow/{{path:path}}", f"{base}/ajax-api/2.0/mlflow/{{path:path}}"],
        http_method=_METHODS,
        name=f"mlflow{base}",
    )
    async def tracking(request: Request[Any, Any, Any]) -> Response[Any]:
        path = str(request.path_params["path"]).strip("/")
        try:
            tracker = await resolve(request)
            body = await call(tracker, request.method, path, await _request_body(request))
            return Response(body, status_code=200)
        except Exception as exc:
            return _error(exc)

    @route(
        [f"{base}{_ARTIFACTS}", f"{base}{_ARTIFACTS}/{{path:path}}"],
        http_method=[HttpMethod.GET, HttpMethod.PUT],
        name=f"mlflow-artifacts{base}",
    )
    async def artifacts(request: Request[Any, Any, Any]) -> Any:
        raw = request.path_params.get("path")
        try:
            tracker = await resolve(request)
            if raw is None:  # a listing: the folder is in ?path=
                if request.method != "GET":
                    raise MlflowError("ENDPOINT_NOT_FOUND", f"PUT {_ARTIFACTS} names no file", 404)
                return Response(
                    await _list(tracker, request.query_params.get("path", "")), status_code=200
                )
            path = posixpath.normpath(str(raw).lstrip("/"))
            if request.method == "PUT":
                return Response(await _put(tracker, path, request), status_code=200)
            return await _get(tracker, path)
        except Exception as exc:
            return _error(exc)

    return [tracking, artifacts]
