"""Blobs in an S3 bucket through aiobotocore: single PUT up to 16 MiB, multipart above."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import msgspec

from cairn.errors import NotFound, Unavailable
from cairn.storage._port import blob_key

__all__ = ["S3BlobStore", "S3Config"]

PART_BYTES = 16 * 1024 * 1024


def _read_part(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


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
        key, bucket = self._key(digest), self.config.bucket
        total = (await asyncio.to_thread(path.stat)).st_size
        if total <= PART_BYTES:
            body = await asyncio.to_thread(path.read_bytes)
            await self.client.put_object(Bucket=bucket, Key=key, Body=body)
            return True
        upload = await self.client.create_multipart_upload(Bucket=bucket, Key=key)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, offset in enumerate(range(0, total, PART_BYTES), start=1):
                chunk = await asyncio.to_thread(_read_part, path, offset, PART_BYTES)
                part = await self.client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"ETag": part["ETag"], "PartNumber": number})
            await self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
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
