"""Blobs as files under one directory: ``<root>/sha256/ab/cd/<hex>``, written by rename."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from cairn.errors import NotFound
from cairn.storage._port import blob_key

__all__ = ["LocalBlobStore"]


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        return self.root / blob_key(digest)

    async def size(self, digest: str) -> int | None:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            return None

    async def put_file(self, digest: str, path: Path) -> bool:
        final = self._path(digest)
        if final.exists():
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = self.root / "tmp" / uuid.uuid4().hex
        await asyncio.to_thread(shutil.copyfile, path, staged)
        os.chmod(staged, 0o444)
        os.replace(staged, final)  # atomic: readers see all of the blob or none of it
        return True

    async def read(self, digest: str, offset: int, length: int) -> bytes:
        def _read() -> bytes:
            try:
                with open(self._path(digest), "rb") as f:
                    f.seek(offset)
                    return f.read(length)
            except FileNotFoundError:
                raise NotFound(f"blob {digest} is not stored") from None

        return await asyncio.to_thread(_read)

    async def close(self) -> None:
        return None
