"""Cairn's exceptions; the tree is drawn in :mod:`cairn.proto.errors`."""

from cairn.proto.errors import (
    AlreadyExists,
    BatchRejected,
    CairnError,
    ConcurrencyConflict,
    InvalidInput,
    InvalidName,
    InvalidTransition,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
    UnknownMessageType,
    error_for_code,
)

__all__ = [
    "AlreadyExists",
    "BatchRejected",
    "CairnError",
    "ConcurrencyConflict",
    "InvalidInput",
    "InvalidName",
    "InvalidTransition",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "Unavailable",
    "UnknownMessageType",
    "error_for_code",
]
