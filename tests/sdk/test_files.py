"""Run files: the path chokepoint, uploads and downloads through the artifact service."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import msgspec
import pytest

from cairn.bus import Connection
from cairn.errors import AlreadyExists, InvalidName
from cairn.proto.commands import CreateExperiment, CreateRun, ErrorReply, Reply
from cairn.proto.paths import validate_run_path
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings

_reply = msgspec.json.Decoder(Reply)

# reliability.md §3.5, every entry of the path list
HOSTILE_PATHS = [
    "",
    ".",
    "..",
    "../x",
    "a/../../x",
    "a/..",
    "/etc/passwd",
    "//etc/passwd",
    "file:///etc/passwd",
    "s3://bucket/x",
    "C:\\x",
    "C:/x",
    "\\\\server\\share\\x",
    "a\\..\\..\\x",
    "%2e%2e/x",
    "%2e%2e%2fx",
    "..%2fx",
    "%252e%252e%252fx",
    "%25252e%25252e%25252fx",
    "..%c0%af",
    "a#/../../x",
    "a?x=../../y",
    "a;/../x",
    "a/\x00b",
    "a/\x1bb",
    "line\nbreak",
    "\uff0e\uff0e\uff0fx",
    "x" * 256,
    "/".join(["abcdefgh"] * 120),
    "a//b",
    "a/./b",
    "trailing/",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidName):
        validate_run_path(path)


@pytest.mark.parametrize(
    "path", ["model.pkl", "outputs/model.pkl", "100%.txt", "a b/c d.txt", "résumé.txt", "10:30.log"]
)
def test_ordinary_paths_pass_unchanged(path: str) -> None:
    assert validate_run_path(path) == path


@pytest.fixture
async def ws(client: Client, client_settings: Settings, tmp_path: Path) -> AsyncWorkspace:
    settings = msgspec.structs.replace(client_settings, home=str(tmp_path / "home"))
    return AsyncWorkspace(client.conn, client.workspace, settings)


@pytest.mark.parametrize("path", HOSTILE_PATHS[:24])
async def test_the_service_refuses_hostile_paths_and_keeps_nothing(
    client: Client, client_conn: Connection, service_settings: Settings, path: str
) -> None:
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="e"))
    await client.send(CreateRun(command_id=uuid.uuid4().hex, run_id="f1", experiment_name="e"))
    body = json.dumps(
        {
            "type": "OpenUpload",
            "command_id": uuid.uuid4().hex,
            "run_id": "f1",
            "path": path,
            "size": 4,
        }
    ).encode()
    msg = await client_conn.nc.request(f"cairn.cmd.{client.workspace}.artifact.upload", body, 5)
    reply = _reply.decode(msg.data)
    assert isinstance(reply, ErrorReply) and reply.code in ("invalid_name", "invalid_input")
    assert list((service_settings.state_path / "uploads").iterdir()) == []


async def test_upload_download_round_trip_and_dedupe(
    ws: AsyncWorkspace, tmp_path: Path, service_settings: Settings
) -> None:
    run = await (await ws.experiment("files")).start_run()
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, not a multiple of any
    src = tmp_path / "weights.bin"
    src.write_bytes(data)
    await run.upload_file("outputs/weights.bin", src)
    await run.upload_file("outputs/copy.bin", src)  # same bytes: one blob
    await run.upload_file("outputs/weights.bin", src)  # same path, same bytes: a no-op
    other = tmp_path / "other.bin"
    other.write_bytes(b"different")
    with pytest.raises(AlreadyExists):
        await run.upload_file("outputs/weights.bin", other)
    files = await run.files()
    assert [(f["path"], f["size"]) for f in files] == [
        ("outputs/copy.bin", len(data)),
        ("outputs/weights.bin", len(data)),
    ]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert {f["digest"] for f in files} == {digest}
    blobs = [p for p in service_settings.artifacts_path.rglob("*") if p.is_file()]
    assert sum(1 for p in blobs if p.name == digest[7:]) == 1
    got = await run.download_file("outputs/copy.bin", tmp_path / "out" / "copy.bin")
    assert got.read_bytes() == data
    assert (await run.files("outputs/w"))[0]["path"] == "outputs/weights.bin"


async def test_upload_to_an_unknown_run_is_refused(ws: AsyncWorkspace, tmp_path: Path) -> None:
    from cairn.errors import NotFound

    src = tmp_path / "x.txt"
    src.write_text("x")
    with pytest.raises(NotFound):
        await ws.run("no-such-run").upload_file("x.txt", src)


async def test_large_transfers_show_progress(
    ws: AsyncWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await (await ws.experiment("progress")).start_run()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024))
    await run.upload_file("big.bin", src, show_progress=True)
    await run.download_file("big.bin", tmp_path / "back.bin", show_progress=True)
    err = capsys.readouterr().err
    # each transfer draws one bar (redrawn in place with "\r", as often as the load allows)
    # from 0% to its last drawing at 100% of the file's size
    drawings = [d.strip() for d in err.split("\r") if d.strip()]
    starts = [i for i, d in enumerate(drawings) if d.startswith("big.bin:   0%")]
    assert starts[:1] == [0] and len(starts) == 2, drawings
    for last in (drawings[starts[1] - 1], drawings[-1]):
        assert last.startswith("big.bin: 100%") and "9.44M/9.44M" in last, drawings
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    await run.cancel("not needed")
    assert await run.get_status() == "Canceled"


async def test_a_small_file_travels_in_one_command(
    ws: AsyncWorkspace, client: Client, tmp_path: Path, service_settings: Settings
) -> None:
    """A file of at most INLINE_BYTES is stored and committed by its OpenUpload alone; a
    retried command takes effect once; a wrong size or an oversized body is refused and
    leaves nothing behind."""
    from cairn.errors import InvalidInput, PayloadTooLarge
    from cairn.proto.artifacts import INLINE_BYTES, OpenUpload
    from cairn.proto.commands import Accepted

    run = await (await ws.experiment("inline")).start_run()
    data = os.urandom(INLINE_BYTES)
    cmd = OpenUpload(
        command_id=uuid.uuid4().hex,
        run_id=run.id,
        path="outputs/small.bin",
        size=len(data),
        data=data,
    )
    first = await client.send_any(cmd)
    again = await client.send_any(cmd)
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert again.replayed and again.seq == first.seq
    files = [(f["path"], f["size"], f["digest"]) for f in await run.files()]
    assert files == [("outputs/small.bin", len(data), "sha256:" + hashlib.sha256(data).hexdigest())]
    got = await run.download_file("outputs/small.bin", tmp_path / "small.bin")
    assert got.read_bytes() == data
    with pytest.raises(InvalidInput, match="received 3 of 4 bytes"):
        await client.send_any(
            OpenUpload(
                command_id=uuid.uuid4().hex, run_id=run.id, path="outputs/x", size=4, data=b"abc"
            )
        )
    big = os.urandom(INLINE_BYTES + 1)
    with pytest.raises(PayloadTooLarge):
        await client.send_any(
            OpenUpload(
                command_id=uuid.uuid4().hex,
                run_id=run.id,
                path="outputs/x",
                size=len(big),
                data=big,
            )
        )
    assert [f["path"] for f in await run.files()] == ["outputs/small.bin"]
    assert list((service_settings.state_path / "uploads").iterdir()) == []
