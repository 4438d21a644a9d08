"""Reading and writing the files of a datastore: a local directory or an S3 bucket (prefix).

Every path a caller names goes through the run-path chokepoint first (relative, no ``..``, no
encodings); a local datastore also resolves the final path and refuses one that leaves its
root through a symlink. Wildcard patterns are matched against a listing, segment by segment
(``*`` and ``?`` never cross a ``/``), so a pattern cannot reach outside the datastore either.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import msgspec

from cairn.errors import InvalidName, NotFound, Unauthenticated, Unavailable
from cairn.proto.assets import DatastoreSpec
from cairn.proto.paths import validate_run_path
from cairn.storage import digest_of_file, put_s3_file

__all__ = [
    "Entry",
    "LocalStore",
    "S3Store",
    "Store",
    "check_store",
    "local_target",
    "match",
    "open_store",
    "read_only_tree",
    "sha256_hex",
    "writable_tree",
]

_BUFFER = 1024 * 1024
#: told the bytes of a file as they are written (from a worker thread for a local datastore)
Counter = Callable[[int], None]


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """A file in a datastore: its path, size and ``etag``: the object's ETag in S3; for a
    local datastore empty in listings (hashing every file to list a folder would read it all)
    and the SHA-256 from :meth:`Store.fingerprint`."""

    path: str
    size: int
    etag: str


class Store(Protocol):
    name: str

    async def list(self, prefix: str = "") -> list[Entry]: ...

    async def stat(self, path: str) -> Entry | None: ...

    async def fingerprint(self, entry: Entry) -> Entry: ...

    async def put(self, path: str, source: Path, progress: Counter | None = None) -> Entry: ...

    async def get(self, path: str, target: Path, progress: Counter | None = None) -> None: ...

    async def head(self, path: str, limit: int) -> bytes:
        """The first ``limit`` bytes of a file (all of a shorter one), never more."""
        ...

    async def close(self) -> None: ...


def sha256_hex(path: Path) -> str:
    """The SHA-256 of a file, hex (the form S3 ETags and local fingerprints share)."""
    return digest_of_file(path).removeprefix("sha256:")


def read_only_tree(folder: Path) -> None:
    """Files 0444, folders 0555: a copy a job may read but (short of root) not change."""
    for root, dirs, files in os.walk(folder):
        for f in files:
            os.chmod(os.path.join(root, f), 0o444)
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o555)


def writable_tree(folder: Path) -> None:
    """Undo :func:`read_only_tree` (before removing or handing out a writable copy)."""
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)


def local_target(root: Path, path: str) -> Path:
    """Where a download writes ``path`` (a name taken from the log or a listing) under the
    folder ``root``: checked as a run path, then resolved (links included) and refused unless
    it stays under the real path of ``root``; returned as ``root / path``."""
    base = root.resolve()
    if base not in (base / validate_run_path(path)).resolve().parents:
        raise InvalidName(f"{path!r:.200} leads out of the download folder {root}")
    return root / path


def _prefix_ok(prefix: str) -> str:
    prefix = prefix.strip("/")
    if prefix:
        validate_run_path(prefix)
    return prefix


class LocalStore:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root.resolve()

    def _path(self, path: str) -> Path:
        full = (self.root / validate_run_path(path)).resolve()
        if full != self.root and self.root not in full.parents:
            raise InvalidName(f"{path!r} leads out of datastore {self.name}")
        return full

    async def list(self, prefix: str = "") -> list[Entry]:
        prefix = _prefix_ok(prefix)

        def walk() -> list[Entry]:
            base = self._path(prefix) if prefix else self.root
            if base.is_file():
                return [self._entry(base)]
            out = []
            for folder, dirs, files in os.walk(base):
                dirs.sort()
                for f in sorted(files):
                    full = Path(folder) / f
                    if full.is_symlink() and self.root not in full.resolve().parents:
                        continue  # never follow a link out of the datastore
                    out.append(self._entry(full))
            return out

        return await asyncio.to_thread(walk)

    def _entry(self, full: Path) -> Entry:
        return Entry(full.relative_to(self.root).as_posix(), full.stat().st_size, "")

    async def fingerprint(self, entry: Entry) -> Entry:
        full = self._path(entry.path)
        digest = await asyncio.to_thread(sha256_hex, full)
        return Entry(entry.path, (await asyncio.to_thread(full.stat)).st_size, digest)

    async def stat(self, path: str) -> Entry | None:
        full = self._path(path)
        return await asyncio.to_thread(lambda: self._entry(full) if full.is_file() else None)

    async def put(self, path: str, source: Path, progress: Counter | None = None) -> Entry:
        target = self._path(path)

        def copy() -> Entry:
            _copy_into(source, target, progress)
            return self._entry(target)

        return await asyncio.to_thread(copy)

    async def get(self, path: str, target: Path, progress: Counter | None = None) -> None:
        full = self._path(path)
        if not full.is_file():
            raise NotFound(f"datastore {self.name} has no file {path!r}")
        await asyncio.to_thread(_copy_into, full, target, progress)

    async def head(self, path: str, limit: int) -> bytes:
        full = self._path(path)
        if not full.is_file():
            raise NotFound(f"datastore {self.name} has no file {path!r}")

        def read() -> bytes:
            with open(full, "rb") as f:
                return f.read(max(0, limit))

        return await asyncio.to_thread(read)

    async def close(self) -> None:
        return None


def _copy_into(source: Path, target: Path, progress: Counter | None = None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    if progress is None:
        shutil.copyfile(source, tmp)
    else:  # in pieces, each counted
        with open(source, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(_BUFFER):
                out.write(chunk)
                progress(len(chunk))
    os.replace(tmp, target)


_REFUSED_CODES = ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
_MISSING_CODES = ("404", "NoSuchBucket", "NoSuchKey", "NotFound")


@contextlib.contextmanager
def _s3_errors(name: str, spec: DatastoreSpec, unsigned: bool = False) -> Iterator[None]:
    """What a datastore's S3 endpoint says, as one typed line: no credentials, refused
    credentials, no such bucket, no endpoint (never botocore's traceback)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = f"bucket {spec.bucket!r} at {spec.endpoint_url or 'the default S3 endpoint'}"
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise Unauthenticated(
            f"datastore {name}: no credentials for {where}: register it with access_key_id and"
            " secret_access_key (`cairn datastore create ... --access-key-id ..."
            " --secret-access-key ...`), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            " wherever its data moves"
        ) from exc
    except EndpointConnectionError as exc:
        raise Unavailable(f"datastore {name}: cannot reach {where}: {exc}") from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _REFUSED_CODES and unsigned:
            raise Unauthenticated(
                f"datastore {name}: {where} refused an unsigned request ({code}): the"
                " datastore has no credentials, and an s3:// URL is never read with this"
                " machine's own; register the datastore with credentials"
            ) from exc
        if code in _REFUSED_CODES:
            raise Unauthenticated(
                f"datastore {name}: {where} refused the credentials ({code})"
            ) from exc
        if code in _MISSING_CODES:
            raise NotFound(f"datastore {name}: no {where}") from exc
        raise Unavailable(f"datastore {name}: {where}: {exc}") from exc
    except BotoCoreError as exc:
        raise Unavailable(f"datastore {name}: {where}: {exc}") from exc


class S3Store:
    def __init__(
        self, name: str, spec: DatastoreSpec, client: Any, stack: Any, unsigned: bool = False
    ) -> None:
        self.name, self.spec, self.client, self._stack = name, spec, client, stack
        self.unsigned = unsigned
        self.bucket = spec.bucket or ""
        self.prefix = spec.prefix.strip("/") + "/" if spec.prefix.strip("/") else ""

    @classmethod
    async def open(
        cls, name: str, spec: DatastoreSpec, creds: dict[str, Any], *, ambient: bool = True
    ) -> S3Store:
        """A client with ``creds``; without them, the machine's own (``ambient``) or none:
        unsigned requests, which only a public bucket answers."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session
        from botocore import UNSIGNED

        unsigned = not ambient and not creds.get("access_key_id")
        config = AioConfig(
            max_pool_connections=32, signature_version=UNSIGNED if unsigned else None
        )

        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=spec.endpoint_url,
                region_name=spec.region or "us-east-1",
                aws_access_key_id=creds.get("access_key_id"),
                aws_secret_access_key=creds.get("secret_access_key"),
                config=config,
            )
        )
        return cls(name, spec, client, stack, unsigned)

    def _key(self, path: str) -> str:
        return self.prefix + validate_run_path(path)

    async def check(self) -> None:
        """The bucket exists and the credentials open it (one ``HeadBucket``)."""
        with _s3_errors(self.name, self.spec, self.unsigned):
            await self.client.head_bucket(Bucket=self.bucket)

    async def list(self, prefix: str = "") -> list[Entry]:
        prefix = _prefix_ok(prefix)
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        with _s3_errors(self.name, self.spec, self.unsigned):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) :]
                    if prefix and not (rel == prefix or rel.startswith(prefix + "/")):
                        continue
                    out.append(Entry(rel, int(obj["Size"]), str(obj["ETag"]).strip('"')))
        return sorted(out, key=lambda e: e.path)

    async def fingerprint(self, entry: Entry) -> Entry:
        return entry if entry.etag else (await self.stat(entry.path)) or entry

    async def stat(self, path: str) -> Entry | None:
        try:
            with _s3_errors(self.name, self.spec, self.unsigned):
                head = await self.client.head_object(Bucket=self.bucket, Key=self._key(path))
        except NotFound:
            return None
        return Entry(path, int(head["ContentLength"]), str(head["ETag"]).strip('"'))

    async def put(self, path: str, source: Path, progress: Counter | None = None) -> Entry:
        key = self._key(path)
        with _s3_errors(self.name, self.spec, self.unsigned):
            size, etag = await put_s3_file(self.client, self.bucket, key, source, progress=progress)
        return Entry(path, size, etag)

    async def get(self, path: str, target: Path, progress: Counter | None = None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        try:
            with _s3_errors(self.name, self.spec, self.unsigned):
                got = await self.client.get_object(Bucket=self.bucket, Key=self._key(path))
        except NotFound as exc:
            raise NotFound(f"datastore {self.name} has no file {path!r}") from exc
        try:
            with open(tmp, "wb") as out:  # noqa: ASYNC230 - written chunk by chunk
                async with got["Body"] as body:
                    async for chunk in _chunks(body):
                        out.write(chunk)
                        if progress is not None:
                            progress(len(chunk))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    async def head(self, path: str, limit: int) -> bytes:
        if limit <= 0:
            return b""
        key = self._key(path)
        try:
            with _s3_errors(self.name, self.spec, self.unsigned):
                got = await self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes=0-{limit - 1}"
                )
                async with got["Body"] as body:
                    data: bytes = await body.read()
        except NotFound as exc:
            raise NotFound(f"datastore {self.name} has no file {path!r}") from exc
        except Unavailable:
            entry = await self.stat(path)  # an empty object has no byte 0 to range over
            if entry is not None and entry.size == 0:
                return b""
            raise
        return data[:limit]

    async def close(self) -> None:
        await self._stack.aclose()


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    while chunk := await body.read(_BUFFER):
        yield chunk


async def check_store(name: str, spec: DatastoreSpec, creds: dict[str, Any] | None) -> None:
    """Refuse a datastore that cannot be used from here: an S3 bucket that is missing or does
    not open with the credentials (``Unauthenticated``, ``NotFound``, ``Unavailable``)."""
    if spec.kind != "s3":
        return
    store = await S3Store.open(name, spec, creds or {})
    try:
        await store.check()
    finally:
        await store.close()


async def open_store(
    name: str, spec: DatastoreSpec, creds: dict[str, Any] | None, *, ambient: bool = True
) -> Store:
    if spec.kind == "local":
        if not spec.path:
            raise NotFound(f"datastore {name} has no path")
        return LocalStore(name, Path(spec.path))
    return await S3Store.open(name, spec, creds or {}, ambient=ambient)


def _literal_prefix(pattern: str) -> str:
    parts = []
    for segment in pattern.split("/"):
        if any(c in segment for c in "*?["):
            break
        parts.append(segment)
    return "/".join(parts)


async def match(store: Store, pattern: str) -> list[Entry]:
    """The files of ``store`` that ``pattern`` names (``*``/``?`` within one segment; a
    pattern naming a folder takes every file below it)."""
    validate_run_path(pattern)
    prefix = _literal_prefix(pattern)
    entries = await store.list(prefix)
    if prefix == pattern:  # no wildcard: that file, or everything under that folder
        return entries
    wanted = pattern.split("/")
    found = []
    for entry in entries:
        parts = entry.path.split("/")
        if len(parts) == len(wanted) and all(
            fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True)
        ):
            found.append(entry)
    return found
