"""The audit service's files. Its signing key: an Ed25519 private key in a file only that service
opens (``<keys_dir>/audit.ed25519.key``, 0600, or ``audit_key_file``), and its public half
beside it (``.pub``, readable by anyone: what ``cairn audit key`` prints and ``cairn audit
verify`` checks signatures with). Replicas given the same folder share one key: the first to
start makes it, under a lock beside it, and the others read it. Its heads,
``<state>/audit-heads.json``: the last checkpoint it knows of per workspace, the default anchor
of ``cairn audit verify``."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from cairn.errors import CairnError, InvalidInput, NotFound
from cairn.settings import Settings

__all__ = [
    "heads_path",
    "load_or_create_signing_key",
    "parse_public_key",
    "private_key_path",
    "public_key_hex",
    "public_key_path",
    "read_public_key",
]


def private_key_path(settings: Settings) -> Path:
    if settings.audit_key_file:
        return Path(settings.audit_key_file).expanduser()
    keys = Path(settings.keys_dir).expanduser() if settings.keys_dir else None
    return (keys or settings.home_path / "keys") / "audit.ed25519.key"


def public_key_path(settings: Settings) -> Path:
    return private_key_path(settings).with_suffix(".pub")


def heads_path(settings: Settings) -> Path:
    """Where the audit service keeps the last checkpoint it knows of per workspace: an anchor
    for ``cairn audit verify`` (a copy kept elsewhere shows a truncated log)."""
    return settings.state_path / "audit-heads.json"


def public_key_hex(public: Ed25519PublicKey) -> str:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Written whole under a temporary name of this process's own, then renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process at a time makes the key at ``path`` (replicas sharing its folder)."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CairnError(f"{path} holds no readable private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CairnError(f"{path} holds no Ed25519 private key")
    return key


def load_or_create_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The signing key, made (with its ``.pub``) on first use; the ``.pub`` is rewritten
    from the private key when it is missing or disagrees."""
    path = private_key_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        with _locked(path):
            if not path.exists():  # another replica may have made it meanwhile
                made = Ed25519PrivateKey.generate()
                pem = made.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
                _write_new(path, pem, 0o600)
    key = _read_key(path)
    pub = public_key_path(settings)
    text = public_key_hex(key.public_key()) + "\n"
    if not pub.exists() or pub.read_text() != text:
        _write_new(pub, text.encode(), 0o644)
    return key


def parse_public_key(text: str, what: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from 64 hex digits (what ``cairn audit key`` prints)."""
    value = text.strip()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput(f"{what} must be 64 hex digits (an Ed25519 public key)")
    return Ed25519PublicKey.from_public_bytes(raw)


def read_public_key(path: Path) -> Ed25519PublicKey:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFound(
            f"no audit key at {path}: the audit service makes it on its first start"
            " ('cairn up' or 'cairn serve audit')"
        ) from None
    return parse_public_key(text, str(path))
