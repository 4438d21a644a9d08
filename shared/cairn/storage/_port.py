"""The blob store port: blobs named by their SHA-256, written once, read by range."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from cairn.errors import InvalidInput

__all__ = ["BlobStore", "blob_key", "digest_of_file"]


def blob_key(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256/ab/cd/<hex>`` (fan-out keeps directories small)."""
    algo, _, hexdigest = digest.partition(":")
    hex_ok = len(hexdigest) == 64 and all(c in "0123456789abcdef" for c in hexdigest)
    if algo != "sha256" or not hex_ok:
        raise InvalidInput(f"not a sha256 digest: {digest!r}")
    return f"sha256/{hexdigest[:2]}/{hexdigest[2:4]}/{hexdigest}"


def digest_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class BlobStore(Protocol):
    """Every backend passes the same contract tests (tests/storage)."""

    async def size(self, digest: str) -> int | None:
        """The blob's size, or None if it is not stored."""

    async def put_file(self, digest: str, path: Path) -> bool:
        """Store the file at ``path`` as ``digest`` (the caller has verified the digest).
        Returns False when the blob was already there (identical content is stored once)."""

    async def read(self, digest: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; ``NotFound`` if the blob is not stored."""

    async def close(self) -> None: ...
