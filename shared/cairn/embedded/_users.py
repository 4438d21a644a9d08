"""``cairn user`` and ``cairn token``: the people of the embedded server and their API tokens,
edited in ``credentials.json`` and loaded by the running server without a restart.

Each change takes the home's ``credentials.lock`` (two ``cairn user`` at once do not lose
each other's edits), writes ``credentials.json``, ``roles.json`` and ``nats/accounts.conf``,
and signals the server that runs over the home to reload its config (SIGHUP). nats-server
applies the new users and permissions to the connections it has, and closes those of a user
that is gone (their reconnects are refused): a removed person, or a revoked token, loses
access at once. A person's tokens go with them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cairn.embedded._auth import Token, check_person_name
from cairn.embedded._server import NatsServer
from cairn.errors import CairnError, InvalidInput, NotFound
from cairn.tokens import format_token

__all__ = ["add_user", "create_token", "list_tokens", "list_users", "remove_user", "revoke_token"]

#: the longest name a token may be given
MAX_TOKEN_NAME = 200


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[NatsServer]:
    """The home's server (not started: its files and the one running over them), while this
    process alone edits its credentials."""
    if not (home / "credentials.json").is_file():
        raise CairnError(
            f"{home} holds no embedded server's credentials: 'cairn user' manages the people of"
            " the server 'cairn up' runs over this home (set CAIRN_HOME to it)"
        )
    fd = os.open(home / "credentials.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield NatsServer(home, port=0)
    finally:
        os.close(fd)


def list_users(home: Path) -> list[dict[str, Any]]:
    """Every person and their roles (no password); the local person is marked."""
    with _locked(home) as server:
        creds = server.credentials
        assert creds is not None
        return [
            {"user": name, "roles": list(p.roles), "local": name == creds.client_user}
            for name, p in sorted(creds.people.items())
        ]


def add_user(home: Path, name: str, roles: Iterable[str]) -> tuple[str, bool]:
    """Add person ``name`` with ``roles``: their new password, and whether a running server
    loaded it (False: none runs; the next ``cairn up`` will)."""
    check_person_name(name)
    with _locked(home) as server:
        assert server.credentials is not None
        if name in server.credentials.people:
            raise InvalidInput(f"{name} is a user already ('cairn user remove' them first)")
        password = server.add_person(name, tuple(roles))
        return password, server.reload()


def remove_user(home: Path, name: str) -> bool:
    """Remove person ``name``; whether a running server loaded the change (and closed their
    connections)."""
    with _locked(home) as server:
        server.remove_person(name)
        return server.reload()


def _token_row(token: Token) -> dict[str, Any]:
    """What may be shown of a token: never its secret."""
    return {"id": token.id, "user": token.person, "name": token.name, "created": token.created}


def create_token(
    home: Path, person: str | None = None, name: str = ""
) -> tuple[dict[str, Any], str, bool]:
    """A new API token of ``person`` (default: the home's local person): what ``list_tokens``
    shows of it, the token string (shown this once: only ``credentials.json`` keeps its
    secret), and whether a running server loaded it."""
    if len(name) > MAX_TOKEN_NAME or not name.isprintable():
        raise InvalidInput(f"a token's name is at most {MAX_TOKEN_NAME} printable characters")
    with _locked(home) as server:
        creds = server.credentials
        assert creds is not None
        who = creds.client_user if person is None else check_person_name(person)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        creds, token = creds.with_token(who, name, created)
        server.save_credentials(creds)
        return _token_row(token), format_token(token.user, token.password), server.reload()


def list_tokens(home: Path, person: str | None = None) -> list[dict[str, Any]]:
    """Every token (of ``person`` alone, if given), oldest first; never a secret."""
    with _locked(home) as server:
        assert server.credentials is not None
        if person is not None and person not in server.credentials.people:
            raise NotFound(f"no person {person!r:.40} in this home ('cairn user list')")
        tokens = server.credentials.tokens.values()
        return [
            _token_row(t)
            for t in sorted(tokens, key=lambda t: (t.created, t.id))
            if person is None or t.person == person
        ]


def revoke_token(home: Path, token_id: str) -> tuple[dict[str, Any], bool]:
    """Revoke token ``token_id``: what it was, and whether a running server loaded the change
    (and closed the token's connections)."""
    with _locked(home) as server:
        assert server.credentials is not None
        creds, token = server.credentials.without_token(token_id)
        server.save_credentials(creds)
        return _token_row(token), server.reload()
