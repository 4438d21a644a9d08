"""``cairn user``: the people of the embedded server, edited in ``credentials.json`` and
loaded by the running server without a restart.

Each change takes the home's ``credentials.lock`` (two ``cairn user`` at once do not lose
each other's edits), writes ``credentials.json``, ``roles.json`` and ``nats/accounts.conf``,
and signals the server that runs over the home to reload its config (SIGHUP). nats-server
applies the new users and permissions to the connections it has, and closes those of a user
that is gone (their reconnects are refused): a removed person loses access at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cairn.embedded._auth import check_person_name
from cairn.embedded._server import NatsServer
from cairn.errors import CairnError, InvalidInput

__all__ = ["add_user", "list_users", "remove_user"]


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
