"""MLflow's tracking REST API (the subset ``mlflow`` 2.x and 3.x clients use), answered with
Cairn's commands and queries through a :class:`Tracker`: the gateway's is the caller's own
connection, an agent's is its job's gate. The mapping:

=======================  =================================================================
MLflow                   Cairn
=======================  =================================================================
experiment (id, name)    experiment (its ``experiment_id``, its name); id ``0`` is
                         ``Default``
run                      run (``run_id``); ``run_name`` is the display name
param                    run property (write-once, as MLflow's params are)
tag                      run tag (``mlflow.runName`` is the display name)
metric                   scalar metric point (``timestamp`` ms -> time s, ``step``)
artifact                 run file (``mlflow-artifacts:/<exp>/<run>/artifacts/<path>``)
logged model (3.x)       a folder of its source run's files, named after the model; its id
                         carries the run and the name, so nothing is stored for it
dataset input            a run tag ``mlflow.input.<name>`` (name, digest, source type)
deleted run              a run tag ``mlflow.lifecycle_stage=deleted`` (the log keeps the
                         run); active-only searches leave such runs out
=======================  =================================================================

Errors are MLflow's: ``{"error_code", "message"}`` with the HTTP status of the kind
(:func:`error_body`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cairn.services.mlflow._experiments import (
    experiments_create,
    experiments_get,
    experiments_get_by_name,
    experiments_search,
)
from cairn.services.mlflow._models import (
    logged_models_create,
    logged_models_finalize,
    logged_models_get,
    logged_models_search,
    runs_log_inputs,
    runs_log_model,
    runs_log_outputs,
)
from cairn.services.mlflow._runs import (
    metrics_get_history,
    runs_create,
    runs_delete,
    runs_get,
    runs_log_batch,
    runs_log_metric,
    runs_log_param,
    runs_restore,
    runs_search,
    runs_set_tag,
    runs_update,
)
from cairn.services.mlflow._tracker import (
    MlflowError,
    Tracker,
)

__all__ = ["ROUTES", "Handler", "call"]

Handler = Callable[[Tracker, dict[str, Any]], Awaitable[dict[str, Any]]]

#: (method, path after ``/api/2.0/mlflow/``) -> handler
ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "experiments/create"): experiments_create,
    ("GET", "experiments/get"): experiments_get,
    ("GET", "experiments/get-by-name"): experiments_get_by_name,
    ("POST", "experiments/search"): experiments_search,
    ("GET", "experiments/search"): experiments_search,
    ("POST", "runs/create"): runs_create,
    ("GET", "runs/get"): runs_get,
    ("POST", "runs/update"): runs_update,
    ("POST", "runs/delete"): runs_delete,
    ("POST", "runs/restore"): runs_restore,
    ("POST", "runs/search"): runs_search,
    ("POST", "runs/log-metric"): runs_log_metric,
    ("POST", "runs/log-parameter"): runs_log_param,
    ("POST", "runs/set-tag"): runs_set_tag,
    ("POST", "runs/log-batch"): runs_log_batch,
    ("POST", "runs/log-inputs"): runs_log_inputs,
    ("POST", "runs/outputs"): runs_log_outputs,
    ("POST", "runs/log-model"): runs_log_model,
    ("GET", "metrics/get-history"): metrics_get_history,
    ("POST", "logged-models"): logged_models_create,
    ("POST", "logged-models/search"): logged_models_search,
    ("GET", "logged-models/{model_id}"): logged_models_get,
    ("PATCH", "logged-models/{model_id}"): logged_models_finalize,
}


async def call(t: Tracker, method: str, path: str, req: dict[str, Any]) -> dict[str, Any]:
    """Answer ``method`` on ``path`` (after ``/api/2.0/mlflow/``); an unknown one is
    ``ENDPOINT_NOT_FOUND`` (404) naming it."""
    handler = ROUTES.get((method, path))
    if handler is None and path.startswith("logged-models/") and path.count("/") == 1:
        handler = ROUTES.get((method, "logged-models/{model_id}"))
        req = {**req, "model_id": path.split("/", 1)[1]}
    if handler is None:
        raise MlflowError(
            "ENDPOINT_NOT_FOUND",
            f"{method} /api/2.0/mlflow/{path} is not part of Cairn's MLflow API",
            404,
        )
    return await handler(t, req)
