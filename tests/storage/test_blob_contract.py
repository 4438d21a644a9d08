"""One contract, every backend: the local filesystem and S3 (a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cairn.errors import InvalidInput, NotFound
from cairn.storage import BlobStore, LocalBlobStore, S3BlobStore, blob_key, digest_of_file
from tests.seaweed import SeaweedFS


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    seaweed: SeaweedFS = request.getfixturevalue("seaweed")
    bucket = "cairn-" + uuid.uuid4().hex[:12]
    store = await S3BlobStore.open(seaweed.config(bucket, prefix="artifacts/"))
    await store.client.create_bucket(Bucket=bucket)
    yield store
    await store.close()


def _file(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / uuid.uuid4().hex
    path.write_bytes(data)
    return path, "sha256:" + hashlib.sha256(data).hexdigest()


async def test_put_read_and_size(blobs: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path, digest = _file(tmp_path, data)
    assert await blobs.size(digest) is None
    assert await blobs.put_file(digest, path) is True
    assert await blobs.size(digest) == len(data)
    assert await blobs.read(digest, 0, len(data)) == data
    assert await blobs.read(digest, 1000, 10) == data[1000:1010]
    assert await blobs.read(digest, len(data) - 5, 100) == data[-5:]
    assert await blobs.read(digest, len(data), 100) == b""


async def test_identical_content_is_stored_once(blobs: BlobStore, tmp_path: Path) -> None:
    first, digest = _file(tmp_path, b"same bytes")
    second, again = _file(tmp_path, b"same bytes")
    assert digest == again
    assert await blobs.put_file(digest, first) is True
    assert await blobs.put_file(digest, second) is False
    assert await blobs.read(digest, 0, 100) == b"same bytes"


async def test_missing_blob_is_not_found(blobs: BlobStore) -> None:
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFound):
        await blobs.read(missing, 0, 10)


async def test_large_blob_goes_multipart(blobs: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(20 * 1024 * 1024 + 123)  # over one 16 MiB part
    path, digest = _file(tmp_path, data)
    assert digest_of_file(path) == digest
    await blobs.put_file(digest, path)
    assert await blobs.size(digest) == len(data)
    assert await blobs.read(digest, 16 * 1024 * 1024 - 2, 4) == data[16 * 1024 * 1024 - 2 :][:4]


@pytest.mark.parametrize(
    "bad", ["", "md5:abc", "sha256:" + "g" * 64, "sha256:../../etc", "sha256:" + "a" * 63]
)
def test_only_sha256_digests_name_blobs(bad: str) -> None:
    with pytest.raises(InvalidInput):
        blob_key(bad)
