"""Workspace keys and roles: what the registry needs to seal secrets and authorise actors.

A workspace's keys (Fernet: AES-128-CBC with HMAC-SHA256) live in a keyring file,
``$CAIRN_HOME/keys/<ws>.keyring`` (mode 0600, JSON ``{"current": id, "keys": {id: key}}``),
made on first use; they never leave the processes that move data or open secrets. Every token
this module seals names its key: ``<key id>:<Fernet token>``, so a rotation knows what is still
sealed under an old key. Before keyrings a workspace had one key in ``<ws>.key``: it is read as
the key ``legacy`` (and its bare tokens, without a key id, are opened by trying every key) until
a rotation writes the keyring and, once nothing live is sealed under it, deletes the file.

Roles come from ``$CAIRN_HOME/roles.json`` (``{"compute_operators": ["olga"]}``), which the
embedded server writes from the people in ``credentials.json``: the server's subject
permissions are the first gate (docs/security.md), this check of the attested actor the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import secrets as _random
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cairn.errors import CairnError, PermissionDenied
from cairn.proto.subjects import validate_token
from cairn.settings import Settings

__all__ = [
    "LEGACY_KEY_ID",
    "Keyring",
    "add_key",
    "drop_keys",
    "key_id_of",
    "keyring",
    "require_any_role",
    "require_role",
    "roles_of",
    "rotation_key_id",
    "seal",
    "seal_text",
    "sealing",
    "unseal",
    "unseal_text",
]

#: the id of the key a workspace had before keyrings (``<ws>.key``)
LEGACY_KEY_ID = "legacy"


@dataclass(frozen=True)
class Keyring:
    """A workspace's keys by id, and which one seals (``current``)."""

    current: str
    keys: dict[str, bytes]

    def fernet(self, key_id: str | None = None) -> Fernet:
        return Fernet(self.keys[key_id or self.current])


def _folder(settings: Settings) -> Path:
    return (
        Path(settings.keys_dir).expanduser() if settings.keys_dir else settings.home_path / "keys"
    )


def _paths(settings: Settings, workspace: str) -> tuple[Path, Path]:
    """The keyring file and the single-key file of before."""
    ws = validate_token(workspace, "workspace")
    folder = _folder(settings)
    return folder / f"{ws}.keyring", folder / f"{ws}.key"


def _new_key_id() -> str:
    return "k" + _random.token_hex(6)


def _lock(settings: Settings, workspace: str, mode: int) -> int:
    """A descriptor holding the workspace's key lock in ``mode`` (closing it releases it)."""
    folder = _folder(settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(
        folder / f"{validate_token(workspace, 'workspace')}.lock", os.O_RDWR | os.O_CREAT, 0o600
    )
    try:
        fcntl.flock(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _locked(settings: Settings, workspace: str) -> Iterator[None]:
    """One writer of a workspace's key files at a time (processes sharing the folder)."""
    fd = _lock(settings, workspace, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.asynccontextmanager
async def sealing(settings: Settings, workspace: str) -> AsyncIterator[None]:
    """Held (shared) from sealing a value until its event is stored. A rotation's new key
    (:func:`add_key`, exclusive) waits for every value sealed under the old key to be stored
    first, so that the re-seal pass that follows finds it: a value sealed under the old key
    but stored after that pass would have been lost when the old key was dropped. The
    workspace's keyring is made first (its making takes the lock exclusive)."""
    await asyncio.to_thread(keyring, settings, workspace)
    try:  # at once, unless a rotation holds it now
        fd = _lock(settings, workspace, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        fd = await _wait_for_lock(settings, workspace, fcntl.LOCK_SH)
    try:
        yield
    finally:
        os.close(fd)


async def _wait_for_lock(settings: Settings, workspace: str, mode: int) -> int:
    """The key lock taken in a thread; a wait given up (cancelled) leaves no descriptor and
    no lock behind, whenever the thread gets it."""
    guard = threading.Lock()
    taken: list[int] = []
    abandoned = [False]

    def take() -> int:
        fd = _lock(settings, workspace, mode)
        with guard:
            if abandoned[0]:
                os.close(fd)
                return -1
            taken.append(fd)
        return fd

    try:
        return await asyncio.to_thread(take)
    except asyncio.CancelledError:
        with guard:
            abandoned[0] = True
            left = list(taken)
        for fd in left:
            os.close(fd)
        raise


def _write(path: Path, ring: Keyring) -> None:
    """Replace ``path`` at once (a reader sees the old ring or the new one, never half)."""
    text = json.dumps(
        {"current": ring.current, "keys": {k: v.decode() for k, v in ring.keys.items()}}, indent=2
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(settings: Settings, workspace: str) -> Keyring | None:
    ring_path, legacy_path = _paths(settings, workspace)
    try:
        raw = json.loads(ring_path.read_text())
    except FileNotFoundError:
        try:
            legacy = legacy_path.read_bytes().strip()
        except FileNotFoundError:
            return None
        return Keyring(current=LEGACY_KEY_ID, keys={LEGACY_KEY_ID: legacy})
    except ValueError as exc:
        raise CairnError(f"the keyring {ring_path} is not valid JSON") from exc
    keys = {str(k): str(v).encode() for k, v in raw["keys"].items()}
    return Keyring(current=str(raw["current"]), keys=keys)


def keyring(settings: Settings, workspace: str, *, create: bool = True) -> Keyring:
    """The workspace's keys, made on first use (``create``); without ``create`` a machine with
    no key for the workspace gets ``PermissionDenied``."""
    ring = _read(settings, workspace)
    if ring is not None:
        return ring
    if not create:
        raise PermissionDenied(
            f"this machine has no key for workspace {workspace} ({_folder(settings)}): it cannot"
            " open the workspace's datastore credentials or secrets"
        )
    with _locked(settings, workspace):
        ring = _read(settings, workspace)  # another process may have made it meanwhile
        if ring is None:
            key_id = _new_key_id()
            ring = Keyring(current=key_id, keys={key_id: Fernet.generate_key()})
            _write(_paths(settings, workspace)[0], ring)
    return ring


def add_key(settings: Settings, workspace: str, key_id: str | None = None) -> tuple[str, list[str]]:
    """Make a new key the workspace's current one, keeping the others (what they sealed still
    opens); returns the new key's id and the ids of the other keys. ``key_id``: the new key's
    id (a rotation derives it from its command, :func:`rotation_key_id`); a key of that id
    already there is kept as it is (made current again if another rotation came since), so
    that a rotation's copy run again (a resent command, a second replica of the service) adds
    nothing and seals under the key the first one made."""
    with _locked(settings, workspace):
        ring = _read(settings, workspace)
        old = dict(ring.keys) if ring else {}
        if key_id is not None and key_id in old:
            if ring is not None and ring.current != key_id:
                _write(_paths(settings, workspace)[0], Keyring(current=key_id, keys=old))
            return key_id, sorted(k for k in old if k != key_id)
        key_id = key_id or _new_key_id()
        _write(
            _paths(settings, workspace)[0],
            Keyring(current=key_id, keys={**old, key_id: Fernet.generate_key()}),
        )
    return key_id, sorted(old)


def rotation_key_id(workspace: str, command_id: str) -> str:
    """The id of the key a rotation command adds: the same for every copy of the command."""
    digest = hashlib.sha256(f"{workspace}/{command_id}".encode()).hexdigest()
    return "k" + digest[:12]


def drop_keys(settings: Settings, workspace: str, keep: str) -> list[str]:
    """Delete every key but ``keep`` (which must be the current one), and the single-key file
    of before; returns the ids dropped. What only they sealed can no longer be opened."""
    with _locked(settings, workspace):
        ring = _read(settings, workspace)
        if ring is None or ring.current != keep:
            raise CairnError(f"key {keep} is no longer workspace {workspace}'s current key")
        ring_path, legacy_path = _paths(settings, workspace)
        _write(ring_path, Keyring(current=keep, keys={keep: ring.keys[keep]}))
        dropped = sorted(k for k in ring.keys if k != keep)
        with contextlib.suppress(FileNotFoundError):
            legacy_path.unlink()
    return dropped


def key_id_of(token: str) -> str | None:
    """The id of the key that sealed ``token``, or None for a bare token of before."""
    key_id, sep, _ = token.partition(":")
    return key_id if sep else None


def _seal(settings: Settings, workspace: str, data: bytes) -> str:
    ring = keyring(settings, workspace)
    return f"{ring.current}:{ring.fernet().encrypt(data).decode()}"


def _unseal(settings: Settings, workspace: str, token: str, what: str) -> bytes:
    ring = keyring(settings, workspace, create=False)
    key_id, sep, body = token.partition(":")
    try:
        if not sep:  # a bare token of before the keyring: any key may open it
            return MultiFernet([Fernet(k) for k in ring.keys.values()]).decrypt(key_id.encode())
        if key_id not in ring.keys:
            raise CairnError(
                f"{what} were sealed under workspace key {key_id:.20}, which this machine does"
                " not have (dropped after a rotation, or not copied here)"
            )
        return ring.fernet(key_id).decrypt(body.encode())
    except InvalidToken as exc:
        raise CairnError(f"sealed {what} do not open with this workspace's key") from exc


def seal(settings: Settings, workspace: str, secret: dict[str, Any]) -> str:
    """Datastore credentials, sealed under the workspace's current key."""
    return _seal(settings, workspace, json.dumps(secret).encode())


def unseal(settings: Settings, workspace: str, token: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_unseal(settings, workspace, token, "credentials"))
    return value


def seal_text(settings: Settings, workspace: str, text: str) -> str:
    """A secret's value, sealed under the workspace's current key."""
    return _seal(settings, workspace, text.encode())


def unseal_text(settings: Settings, workspace: str, token: str) -> str:
    return _unseal(settings, workspace, token, "secret values").decode()


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


def require_any_role(settings: Settings, actor: str, roles: tuple[str, ...], what: str) -> None:
    """Refuse ``actor`` unless it holds one of ``roles`` (``"data_scientists"``...)."""
    found = _roles(settings)
    if not any(actor in found.get(role, []) for role in roles):
        names = " or ".join(r.rstrip("s").replace("_", " ") for r in roles)
        raise PermissionDenied(f"{actor!r} may not {what}: that needs the {names} role")


def roles_of(settings: Settings, actor: str) -> tuple[str, ...]:
    """``actor``'s roles as ``roles.json`` has them (``data_scientist``, ...): the roles the
    server gives that person, which a workspace they create gives them there."""
    return tuple(
        role.removesuffix("s") for role, people in _roles(settings).items() if actor in people
    )
