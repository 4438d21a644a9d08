"""Workspace secrets (Azure ML v1's ``Keyvault``): commands, queries and their limits.

A secret is an aggregate per workspace and name (``cairn.ev.<ws>.secret.<id>``). Its value
travels in two requests only — ``SetSecret`` (to the registry) and the reply to
``ReadSecret`` (from it) — and is stored only sealed under the workspace key; no query reply
and no log line carries it, sealed or not. Reading is a command, not a query: the registry
appends ``SecretRead`` (who read which version, from which run) first and answers with the
value only once that event is stored.

``RotateWorkspaceKey`` makes a new workspace key current, re-seals every live secret and
datastore credential under it by events, and then drops the old keys.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from cairn.proto._base import Id
from cairn.proto.commands import Command, Query
from cairn.proto.errors import InvalidInput, PayloadTooLarge

__all__ = [
    "KEYRING_KIND",
    "MAX_SECRET_BYTES",
    "MAX_SECRET_NAME",
    "SECRET_COMMAND_TYPES",
    "SECRET_KIND",
    "SECRET_NAME_PATTERN",
    "SECRET_QUERY_TYPES",
    "DeleteSecret",
    "ListSecrets",
    "ReadSecret",
    "RotateWorkspaceKey",
    "SecretName",
    "SecretValue",
    "SetSecret",
    "check_secret_name",
    "check_secret_value",
]

#: Azure Key Vault's rule: 1-127 letters, digits and dashes
MAX_SECRET_NAME = 127
SECRET_NAME_PATTERN = r"^[0-9A-Za-z-]{1,127}$"
#: Azure Key Vault's limit on a secret's value: 25 KiB (UTF-8)
MAX_SECRET_BYTES = 25 * 1024

#: a secret's name, as Azure Key Vault allows them
SecretName = Annotated[str, msgspec.Meta(pattern=SECRET_NAME_PATTERN)]
#: a secret's value in clear: at most ``MAX_SECRET_BYTES`` characters here, and the registry
#: refuses more than ``MAX_SECRET_BYTES`` bytes of UTF-8
SecretValue = Annotated[str, msgspec.Meta(max_length=MAX_SECRET_BYTES)]


def check_secret_name(name: object) -> str:
    """``name`` if Azure Key Vault would take it (1-127 letters, digits, ``-``), else
    ``InvalidInput`` saying why (the value of a secret is never part of an error)."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("a secret's name must be a non-empty string")
    if len(name) > MAX_SECRET_NAME:
        raise InvalidInput(f"a secret's name has at most {MAX_SECRET_NAME} characters")
    bad = next((c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))), None)
    if bad is not None:
        raise InvalidInput(
            f"secret name {name!r:.80} may hold only letters, digits and '-', not U+{ord(bad):04X}"
        )
    return name


def check_secret_value(value: object) -> str:
    """``value`` if it is a string of at most ``MAX_SECRET_BYTES`` bytes of UTF-8, else
    ``InvalidInput`` (``PayloadTooLarge`` for size) that never quotes it."""
    if not isinstance(value, str):
        raise InvalidInput(f"a secret's value must be a string, not {type(value).__name__}")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidInput("a secret's value must be valid Unicode (no lone surrogates)") from None
    if size > MAX_SECRET_BYTES:
        raise PayloadTooLarge(
            f"a secret's value is {size} bytes of UTF-8; at most {MAX_SECRET_BYTES} are allowed"
        )
    return value


class SetSecret(Command, frozen=True, kw_only=True, tag=True):
    """Store ``value`` as the next version of secret ``name`` (the same value again is a new
    version too: the registry cannot compare sealed values, and Azure does the same)."""

    VERB = "secret.set"
    name: SecretName
    value: SecretValue

    def __repr__(self) -> str:  # never print the value (tracebacks, logs, debuggers)
        return f"SetSecret(name={self.name!r}, command_id={self.command_id!r}, value=<hidden>)"


class DeleteSecret(Command, frozen=True, kw_only=True, tag=True):
    VERB = "secret.delete"
    name: SecretName


class ReadSecret(Command, frozen=True, kw_only=True, tag=True):
    """Read the current value of secret ``name``; the reply is a ``QueryResult`` whose data is
    ``{"name", "version", "value"}``, sent only after the ``SecretRead`` event is stored.

    ``run_id``: the run that reads it (``run.get_secret``), recorded in the event. A job's
    agent proxy forwards this command only when ``run_id`` is the job's own run."""

    VERB = "secret.read"
    name: SecretName
    run_id: Id | None = None


class RotateWorkspaceKey(Command, frozen=True, kw_only=True, tag=True):
    """Make a new workspace key current, re-seal every live secret and datastore credential
    under it (each by an event), then drop the old keys unless ``keep_old_keys``."""

    VERB = "secret.rotate"
    keep_old_keys: bool = False


class ListSecrets(Query, frozen=True, kw_only=True, tag=True):
    """The workspace's live secrets: name, version, when and by whom each was last set (never
    a value, sealed or not)."""

    NAME = "secret.list"


SECRET_COMMAND_TYPES: tuple[type[Command], ...] = (
    SetSecret,
    DeleteSecret,
    ReadSecret,
    RotateWorkspaceKey,
)
SECRET_QUERY_TYPES: tuple[type[Query], ...] = (ListSecrets,)
#: the aggregate kinds: one secret per name, one keyring (key ids, never keys) per workspace
SECRET_KIND = "secret"
KEYRING_KIND = "keyring"
