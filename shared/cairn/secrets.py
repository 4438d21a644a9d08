"""Workspace keys and roles: what the registry needs to seal secrets and authorise actors.

A workspace key (Fernet: AES-128-CBC with HMAC-SHA256) lives in ``$CAIRN_HOME/keys/<ws>.key``
(mode 0600), is made on first use, and never leaves the processes that move data. Roles come
from ``$CAIRN_HOME/roles.json`` (``{"compute_operators": ["olga"]}``), which the embedded server
writes from the people in ``credentials.json``: the server's subject permissions are the first
gate (docs/security.md), this check of the attested actor the second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from cairn.errors import CairnError, PermissionDenied
from cairn.proto.subjects import validate_token
from cairn.settings import Settings

__all__ = ["require_role", "roles_of", "seal", "unseal"]


def _key(settings: Settings, workspace: str, *, create: bool = True) -> Fernet:
    folder = (
        Path(settings.keys_dir).expanduser() if settings.keys_dir else settings.home_path / "keys"
    )
    path = folder / f"{validate_token(workspace, 'workspace')}.key"
    if not path.exists() and not create:
        raise PermissionDenied(
            f"this machine has no key for workspace {workspace} ({path}): it cannot open the"
            " workspace's datastore credentials"
        )
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
    return Fernet(path.read_bytes())


def seal(settings: Settings, workspace: str, secret: dict[str, Any]) -> str:
    return _key(settings, workspace).encrypt(json.dumps(secret).encode()).decode()


def unseal(settings: Settings, workspace: str, token: str) -> dict[str, Any]:
    try:
        key = _key(settings, workspace, create=False)
        value: dict[str, Any] = json.loads(key.decrypt(token.encode()))
    except InvalidToken as exc:
        raise CairnError("sealed credentials do not open with this workspace's key") from exc
    return value


def _roles(settings: Settings) -> dict[str, list[str]]:
    path = Path(settings.roles_file).expanduser() if settings.roles_file else None
    path = path or settings.home_path / "roles.json"
    try:
        roles: dict[str, list[str]] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return roles


def require_role(settings: Settings, actor: str, role: str) -> None:
    if actor not in _roles(settings).get(role, []):
        raise PermissionDenied(f"{actor!r} does not have the {role.rstrip('s')} role")


def roles_of(settings: Settings, actor: str) -> tuple[str, ...]:
    """``actor``'s roles as ``roles.json`` has them (``data_scientist``, ...): the roles the
    server gives that person, which a workspace they create gives them there."""
    return tuple(
        role.removesuffix("s") for role, people in _roles(settings).items() if actor in people
    )
