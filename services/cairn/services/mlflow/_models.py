"""MLflow 3's logged models (folders of their source run), dataset inputs and model outputs."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from cairn.services.mlflow._runs import (
    _get_run,
    _log,
)
from cairn.services.mlflow._search import (
    ms_of_iso,
)
from cairn.services.mlflow._tracker import (
    Tracker,
    _invalid,
    _not_found,
    _run_id,
    _text,
)

__all__ = [
    "logged_models_create",
    "logged_models_finalize",
    "logged_models_get",
    "logged_models_search",
    "runs_log_inputs",
    "runs_log_model",
    "runs_log_outputs",
]


async def runs_log_inputs(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """Each dataset input becomes a tag ``mlflow.input.<name>``: its name, digest, source
    type and context (the schema and profile stay with the client)."""
    tags: dict[str, str] = {}
    for item in req.get("datasets") or ():
        dataset = (item or {}).get("dataset") or {}
        name = str(dataset.get("name") or dataset.get("digest") or "dataset")
        context = {x.get("key"): x.get("value") for x in (item.get("tags") or ())}
        record = {
            "name": name,
            "digest": dataset.get("digest"),
            "source_type": dataset.get("source_type"),
            "context": context.get("mlflow.data.context"),
        }
        tags[f"mlflow.input.{name}"[:255]] = msgspec.json.encode(record).decode()[:5000]
    if tags:
        await _log(t, _run_id(req), tags=tags)
    return {}


async def runs_log_outputs(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """A logged model as the run's output: a tag ``mlflow.output.<model id>`` with its step."""
    tags = {
        f"mlflow.output.{m.get('model_id')}"[:255]: str(m.get("step") or 0)
        for m in req.get("models") or ()
    }
    if tags:
        await _log(t, _run_id(req), tags=tags)
    return {}


#: the tag where MLflow 2.x keeps a run's logged models (``runs/log-model``), as its server
HISTORY_TAG = "mlflow.log-model.history"


async def runs_log_model(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """MLflow 2.x's record of a model logged into the run's files: appended to the run's
    ``mlflow.log-model.history`` tag (a JSON list), as MLflow's own server keeps it."""
    run_id = _run_id(req)
    raw = _text(req, "model_json")
    try:
        model = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise _invalid("model_json: not JSON") from None
    run = await _get_run(t, run_id)
    history = msgspec.json.decode((run.get("tags") or {}).get(HISTORY_TAG) or "[]")
    history.append(model)
    value = msgspec.json.encode(history).decode()
    if len(value) > 5000:  # what a Cairn tag holds; the model's files are stored all the same
        raise _invalid(f"{HISTORY_TAG}: the run's models take over 5,000 characters")
    await _log(t, run_id, tags={HISTORY_TAG: value})
    return {}


# -- logged models (MLflow 3) ----------------------------------------------------------------


def _model_id(run_id: str, name: str) -> str:
    encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return f"m-{run_id}-{encoded}"


def _model_of(model_id: str) -> tuple[str, str]:
    try:
        _, run_id, encoded = model_id.split("-", 2)
        name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _not_found(f"no logged model {model_id!r:.80}") from None
    return run_id, name


def _logged_model(run: dict[str, Any], name: str, status: str = "READY") -> dict[str, Any]:
    run_id, experiment = run["run_id"], run["experiment_id"]
    created = ms_of_iso(run.get("created_at")) or 0
    return {
        "model": {
            "info": {
                "model_id": _model_id(run_id, name),
                "experiment_id": experiment,
                "name": name,
                "artifact_uri": f"mlflow-artifacts:/{experiment}/{run_id}/artifacts/{name}",
                "creation_timestamp_ms": created,
                "last_updated_timestamp_ms": created,
                "status": status,
                "source_run_id": run_id,
                "tags": [],
            },
            "data": {"params": [], "metrics": []},
        }
    }


async def logged_models_create(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """A logged model is a folder of its source run (``model/`` by default): its files are
    the run's files, seen by Cairn's SDK and the studio like any other."""
    run_id = req.get("source_run_id")
    if not isinstance(run_id, str) or not run_id:
        raise _invalid("source_run_id: a logged model here belongs to a run (start one first)")
    name = str(req.get("name") or "model")
    run = await _get_run(t, run_id)
    return _logged_model(run, name, "PENDING")


async def logged_models_get(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    run_id, name = _model_of(_text(req, "model_id"))
    return _logged_model(await _get_run(t, run_id), name)


async def logged_models_finalize(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    return await logged_models_get(t, req)


async def logged_models_search(t: Tracker, req: dict[str, Any]) -> dict[str, Any]:
    """No logged model is listed: each is a folder of its run's files, which the run's
    artifacts list already (``runs:/<run>/<name>`` reads them); listing it again would show
    every file twice. A model's own id still reads it (``models:/<id>``)."""
    return {"models": []}
