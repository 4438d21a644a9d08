"""Blobs in an S3 bucket through aiobotocore: single PUT up to 16 MiB, multipart above
(``put_s3_file``, which datastores use too)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from cairn.errors import NotFound, Unavailable
from cairn.storage._port import blob_key

__all__ = ["PART_BYTES", "S3BlobStore", "S3Config", "put_s3_file"]

PART_BYTES = 16 * 1024 * 1024


def _read_part(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


async def put_s3_file(
    client: Any,
    bucket: str,
    key: str,
    path: Path,
    parallel: int = 4,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, str]:
    """Write the file at ``path`` to ``key``: one PUT up to ``PART_BYTES``, above that a
    multipart upload with ``parallel`` parts in flight (aborted if anything fails). Returns
    the size written and the object's ETag; ``progress`` is told the bytes of each part
    stored."""
    size = (await asyncio.to_thread(path.stat)).st_size
    if size <= PART_BYTES:
        body = await asyncio.to_thread(path.read_bytes)
        reply = await client.put_object(Bucket=bucket, Key=key, Body=body)
        if progress is not None:
            progress(len(body))
        return size, str(reply["ETag"]).strip('"')
    upload_id = (await client.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
    gate = asyncio.Semaphore(parallel)

    async def part(number: int, offset: int) -> dict[str, Any]:
        async with gate:
            chunk = await asyncio.to_thread(_read_part, path, offset, PART_BYTES)
            where = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
            got = await client.upload_part(**where, PartNumber=number, Body=chunk)
            if progress is not None:
                progress(len(chunk))
            return {"ETag": got["ETag"], "PartNumber": number}

    try:
        offsets = enumerate(range(0, size, PART_BYTES), start=1)
        parts = await asyncio.gather(*(part(n, off) for n, off in offsets))
        done = await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": list(parts)}
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return size, str(done["ETag"]).strip('"')


class S3Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    endpoint_url: str | None = None
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None


class S3BlobStore:
    """Open with ``await S3BlobStore.open(config)``; ``close()`` releases the client."""

    def __init__(self, config: S3Config, client: Any, stack: contextlib.AsyncExitStack) -> None:
        self.config = config
        self.client = client
        self._stack = stack

    @classmethod
    async def open(cls, config: S3Config) -> S3BlobStore:
        from aiobotocore.session import get_session

        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=config.endpoint_url,
                region_name=config.region,
                aws_access_key_id=config.access_key_id,
                aws_secret_access_key=config.secret_access_key,
            )
        )
        return cls(config, client, stack)

    def _key(self, digest: str) -> str:
        return self.config.prefix + blob_key(digest)

    async def size(self, digest: str) -> int | None:
        try:
            head = await self.client.head_object(Bucket=self.config.bucket, Key=self._key(digest))
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise Unavailable(f"S3 head failed: {exc}") from exc
        return int(head["ContentLength"])

    async def put_file(self, digest: str, path: Path) -> bool:
        if await self.size(digest) is not None:
            return False
        await put_s3_file(self.client, self.config.bucket, self._key(digest), path)
        return True

    async def read(self, digest: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            got = await self.client.get_object(
                Bucket=self.config.bucket,
                Key=self._key(digest),
                Range=f"bytes={offset}-{offset + length - 1}",
            )
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFound(f"blob {digest} is not stored") from exc
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise Unavailable(f"S3 read failed: {exc}") from exc
        async with got["Body"] as body:
            data: bytes = await body.read()
            return data

    async def close(self) -> None:
        await self._stack.aclose()
