"""The one error tree of Cairn, shared by services, the SDK and the wire.

Every error that crosses the wire travels as an ``ErrorReply(code, message)`` and is raised
again on the caller's side as the class registered for its ``code``::

    CairnError                      code "internal"
    ├── InvalidInput                code "invalid_input"      malformed or wrong-typed input
    │   ├── InvalidName             code "invalid_name"       bad subject token / name
    │   ├── UnknownMessageType      code "unknown_type"       no such command / query
    │   │   └── UnknownEventType    code "unknown_event_type" an event type name no one writes
    │   ├── PayloadTooLarge         code "payload_too_large"  checked before publishing
    │   ├── Unsupported             code "unsupported"        an argument Cairn refuses by name
    │   └── InvalidBinding          code "invalid_binding"    a pipeline's binding, by YAML path
    ├── NotFound                    code "not_found"          unknown workspace, run, ...
    ├── AlreadyExists               code "already_exists"
    ├── InvalidTransition           code "invalid_transition" e.g. completing a failed run
    ├── ConcurrencyConflict         code "conflict"           CAS lost after bounded retries
    ├── PermissionDenied            code "permission_denied"
    │   └── Unauthenticated         code "unauthenticated"    the server refused the credentials
    ├── Unavailable                 code "unavailable"        bus or stream unreachable
    ├── UnderReplicated             code "under_replicated"   streams with fewer replicas than
    │                                                         the cluster warrants (migrate)
    ├── BatchRejected               code "batch_rejected"     an atomic batch was refused
    ├── DataChanged                 code "data_changed"       a dataset version's bytes moved
    └── StaleAttempt                code "stale_attempt"      a job attempt that lost its lease

``CairnError`` itself is raised for codes this version does not know, so a newer service can
add codes without breaking older clients.

``REFUSALS`` are the errors that say a command itself cannot be taken as written: sending it
again would be refused again. The others (``Unavailable``, ``ConcurrencyConflict``, an unknown
code) may pass on another try; a process manager retries those and fails what it drives only on
a refusal.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "REFUSALS",
    "AlreadyExists",
    "BatchRejected",
    "CairnError",
    "ConcurrencyConflict",
    "DataChanged",
    "InvalidBinding",
    "InvalidInput",
    "InvalidName",
    "InvalidTransition",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "StaleAttempt",
    "Unauthenticated",
    "Unavailable",
    "UnderReplicated",
    "UnknownEventType",
    "UnknownMessageType",
    "Unsupported",
    "error_for_code",
]


class CairnError(Exception):
    """Root of every error Cairn raises on purpose."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(CairnError):
    code = "invalid_input"


class InvalidName(InvalidInput):
    code = "invalid_name"


class UnknownMessageType(InvalidInput):
    code = "unknown_type"


class UnknownEventType(UnknownMessageType):
    """An event type name (an event feed's or a webhook's ``types``) that is not one of the
    published event types; the message lists the valid ones."""

    code = "unknown_event_type"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class Unsupported(InvalidInput):
    """An argument or key that Cairn accepts from the Azure ML API but does not honour: the
    message names it and says what Cairn does instead."""

    code = "unsupported"


class InvalidBinding(InvalidInput):
    """A pipeline whose steps do not fit together: an unknown step or output, a cycle, a type
    mismatch, a missing required input. The message starts with the YAML path of the
    offending key (``jobs.train.inputs.data: ...``)."""

    code = "invalid_binding"

    @classmethod
    def at(cls, path: str, message: str) -> InvalidBinding:
        return cls(f"{path}: {message}")

    @property
    def path(self) -> str:
        """The YAML path the message starts with."""
        return self.message.split(": ", 1)[0]


class NotFound(CairnError):
    code = "not_found"


class AlreadyExists(CairnError):
    code = "already_exists"


class InvalidTransition(CairnError):
    code = "invalid_transition"


class ConcurrencyConflict(CairnError):
    code = "conflict"


class PermissionDenied(CairnError):
    code = "permission_denied"


class Unauthenticated(PermissionDenied):
    """The server refused to let this client connect: wrong or missing credentials, or
    credentials it no longer accepts."""

    code = "unauthenticated"


class Unavailable(CairnError):
    code = "unavailable"


class UnderReplicated(CairnError):
    """The store's streams have fewer replicas than the cluster they are served by warrants
    (a single-node home brought onto a cluster): provisioning refuses, naming each stream,
    its replicas and the command that moves them (``cairn cluster migrate``)."""

    code = "under_replicated"


class BatchRejected(CairnError):
    code = "batch_rejected"


class DataChanged(CairnError):
    """The files behind a dataset version are not the bytes it was registered with."""

    code = "data_changed"


class StaleAttempt(CairnError):
    """A report or claim from a job attempt that is no longer the run's current one (its lease
    was lost and the run re-queued, or the run ended): the sender must stop."""

    code = "stale_attempt"


#: a command refused for what it says (see the module's docstring)
REFUSALS: tuple[type[CairnError], ...] = (
    InvalidInput,
    NotFound,
    PermissionDenied,
    InvalidTransition,
    DataChanged,
)


def _registry() -> dict[str, type[CairnError]]:
    found: dict[str, type[CairnError]] = {}
    pending: list[type[CairnError]] = [CairnError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls
        pending.extend(cls.__subclasses__())
    return found


_BY_CODE = _registry()


def error_for_code(code: str, message: str) -> CairnError:
    """The exception a caller raises for an ``ErrorReply`` it received."""
    return _BY_CODE.get(code, CairnError)(message)
