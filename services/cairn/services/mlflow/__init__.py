"""MLflow's tracking REST API over Cairn: the gateway serves it for its callers, an agent for
each job's attempt (through the job's gate). ``mlflow`` clients log into Cairn's runs."""

from cairn.services.mlflow._api import ROUTES, call
from cairn.services.mlflow._routes import Resolve, mlflow_routes
from cairn.services.mlflow._search import to_cairn_filter, to_cairn_order
from cairn.services.mlflow._tracker import MlflowError, Tracker, error_body

__all__ = [
    "ROUTES",
    "MlflowError",
    "Resolve",
    "Tracker",
    "call",
    "error_body",
    "mlflow_routes",
    "to_cairn_filter",
    "to_cairn_order",
]
