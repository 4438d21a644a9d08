"""Who answers MLflow's requests (:class:`Tracker`) and how errors are told in MLflow's
terms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cairn.errors import (
    AlreadyExists,
    CairnError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from cairn.proto.commands import (
    Accepted,
    Command,
    ListRuns,
    Query,
    QueryResult,
)
from cairn.proto.metrics import LogMetrics
from cairn.rpc import Client

__all__ = [
    "DEFAULT_EXPERIMENT",
    "LIFECYCLE_TAG",
    "PARENT_TAG",
    "RUN_NAME_TAG",
    "RUN_SILENCE_S",
    "MlflowError",
    "Tracker",
    "error_body",
]


DEFAULT_EXPERIMENT = "Default"
#: how long a run started here may stay silent before Cairn fails it as lost (MLflow clients
#: send no heartbeats; every request about the run renews it, at most once a minute)
RUN_SILENCE_S = 3600.0
_RENEW_S = 60.0
LIFECYCLE_TAG = "mlflow.lifecycle_stage"
RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"


class MlflowError(Exception):
    """An error in MLflow's terms: its ``error_code`` and the HTTP status it goes with."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _not_found(message: str) -> MlflowError:
    return MlflowError("RESOURCE_DOES_NOT_EXIST", message, 404)


def _invalid(message: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", message, 400)


def error_body(exc: Exception) -> tuple[int, dict[str, str]]:
    """(HTTP status, MLflow's error body) of an error raised while answering."""
    if isinstance(exc, MlflowError):
        return exc.status, {"error_code": exc.code, "message": exc.message}
    if isinstance(exc, CairnError):
        for kind, code, status in (
            (NotFound, "RESOURCE_DOES_NOT_EXIST", 404),
            (AlreadyExists, "RESOURCE_ALREADY_EXISTS", 400),
            (Unauthenticated, "UNAUTHENTICATED", 401),
            (PermissionDenied, "PERMISSION_DENIED", 403),
            (InvalidInput, "INVALID_PARAMETER_VALUE", 400),
            (InvalidTransition, "INVALID_STATE", 400),
            (Unavailable, "TEMPORARILY_UNAVAILABLE", 503),
        ):
            if isinstance(exc, kind):
                return status, {"error_code": code, "message": exc.message}
        return 409, {"error_code": "INVALID_STATE", "message": exc.message}
    raise exc


@dataclass
class Tracker:
    """Who answers: a workspace's client (the caller's connection at the gateway, the job's
    gate at an agent) and what its caller wrote last (read-your-writes over EVENTS and
    METRICS). ``job_run``: at an agent, the job's own run — the default parent of the runs
    it creates, and one its agent ends (a terminal status for it is not forwarded)."""

    client: Client
    events_seen: dict[str, int] = field(default_factory=dict)
    metrics_seen: dict[str, int] = field(default_factory=dict)
    job_run: str | None = None
    attempt: int | None = None
    job_experiment: str | None = None
    #: when each run was last said to be alive (runs this process started, bounded)
    renewed: dict[str, float] = field(default_factory=dict)

    @property
    def workspace(self) -> str:
        return self.client.workspace

    async def ask(self, q: Query, *, metrics: bool = False) -> QueryResult:
        seen = (self.metrics_seen if metrics else self.events_seen).get(self.workspace, 0)
        if seen > q.min_seq:
            q = msgspec.structs.replace(q, min_seq=seen)
        if isinstance(q, ListRuns):
            q = msgspec.structs.replace(q, metrics_min_seq=self.metrics_seen.get(self.workspace, 0))
        return await self.client.ask(q)

    async def send(self, cmd: Command) -> Accepted:
        accepted = await self.client.send(cmd)
        seen = self.metrics_seen if isinstance(cmd, LogMetrics) else self.events_seen
        seen[self.workspace] = max(seen.get(self.workspace, 0), accepted.seq)
        return accepted


def _id() -> str:
    return uuid.uuid4().hex


def _text(req: dict[str, Any], key: str, *alias: str) -> str:
    for name in (key, *alias):
        value = req.get(name)
        if isinstance(value, str) and value:
            return value
    raise _invalid(f"missing value for required parameter '{key}'")


def _run_id(req: dict[str, Any]) -> str:
    return _text(req, "run_id", "run_uuid")


def _pairs(items: Any, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise _invalid(f"{what}: each needs a key")
        out[item["key"]] = "" if item.get("value") is None else str(item["value"])
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
