"""Inputs that cannot escape or stall: integers past 64 bits, unknown fields, control
characters in names, hostile archives, datastores rooted at the host, unknown job-file
expressions and downloads that climb out of their folder. Each gets a typed error and leaves
nothing behind; an event no read model can apply is quarantined, and every read model keeps
serving."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import Connection
from cairn.data import Entry, LocalStore, download_entries
from cairn.errors import InvalidInput, InvalidName, PermissionDenied, error_for_code
from cairn.proto import subjects
from cairn.proto.artifacts import ListRunFiles, OpenUpload
from cairn.proto.assets import DatastoreSpec, RegisterDatastore
from cairn.proto.commands import (
    CreateExperiment,
    CreateRun,
    CreateWorkspace,
    ErrorReply,
    GetRun,
    ListExperiments,
    QueryResult,
    Reply,
    SetRunTags,
)
from cairn.proto.events import (
    ArtifactCommitted,
    Envelope,
    Event,
    RunAssigned,
    encode_envelope,
)
from cairn.proto.jobs import ListJobs
from cairn.proto.metrics import GetMetrics
from cairn.proto.paths import validate_run_path
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, load_job_file
from cairn.sdk._metrics import scalar
from cairn.settings import Settings
from cairn.snapshot import SnapshotRefused, unpack
from tests.helpers import envelope
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli_json

BIG = 2**63  # one past the largest signed 64-bit integer


def _id() -> str:
    return uuid.uuid4().hex[:16]


async def _raw(client: Client, subject: str, body: dict[str, Any]) -> Reply:
    """A request as any client could send it (JSON of its own making); its typed error."""
    msg = await client.conn.nc.request(
        subject, json.dumps(body).encode(), timeout=10, headers=client.headers
    )
    reply: Reply = msgspec.json.decode(msg.data, type=Reply)
    if isinstance(reply, ErrorReply):
        raise error_for_code(reply.code, reply.message)
    return reply


def _cmd(client: Client, verb: str) -> str:
    return subjects.command(client.workspace, verb)


def _query(client: Client, name: str) -> str:
    return subjects.query(client.workspace, name)


# -- 1. integers past 64 bits, and a poisoned log -------------------------------------------


async def test_the_sdk_refuses_integers_past_64_bits_before_sending(ws: AsyncWorkspace) -> None:
    run = await (await ws.experiment("big")).start_run()
    with pytest.raises(InvalidInput, match="64-bit"):
        run.log("n", BIG)
    with pytest.raises(InvalidInput, match="step"):
        run.log("n", 1, step=BIG)
    with pytest.raises(InvalidInput, match="step"):
        run.log("n", 1, step=-1)
    with pytest.raises(InvalidInput, match="64-bit"):
        run.log_row("row", a=1, b=-(BIG + 1))
    with pytest.raises(InvalidInput, match="64-bit"):
        scalar(BIG)  # the sync facade's run.log goes through it
    run.log("n", BIG - 1, step=3)  # the edge itself is fine
    await run.flush()
    assert (await run.get_metrics("n"))["n"] in (BIG - 1, [BIG - 1])
    await run.complete()


async def test_commands_and_queries_refuse_integers_out_of_range(client: Client) -> None:
    point = ["n", "scalar", 1, BIG, 1.0]
    body = {"type": "LogMetrics", "command_id": _id(), "run_id": "r1", "points": [point]}
    with pytest.raises(InvalidInput, match="9223372036854775807"):
        await _raw(client, _cmd(client, "metrics.log"), body)
    with pytest.raises(InvalidInput, match="limit"):
        await _raw(client, _query(client, "run.list"), {"type": "ListRuns", "limit": -1})
    with pytest.raises(InvalidInput, match="min_seq"):
        await _raw(
            client, _query(client, "run.get"), {"type": "GetRun", "run_id": "r", "min_seq": BIG}
        )


def _run_event(ws: str, run_id: str, event: Event) -> Envelope[Event]:
    """A run's event as an administrator appends it, past every service."""
    return envelope(ws, run_id, event, cause=_id(), kind="run", actor="admin")


def _poisoned_assignment(ws: str, run_id: str) -> bytes:
    event = RunAssigned(run_id=run_id, attempt=BIG, queue_n=1, agent_id="a1", lease_s=5.0)
    return encode_envelope(_run_event(ws, run_id, event))


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "e30",  # base64 of {}
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        base64.urlsafe_b64encode(b'[1, "0000000000000000", [], "r"]').decode(),
        base64.urlsafe_b64encode(b'[1, "x", [{"a": 1}], "r"]').decode(),
        base64.urlsafe_b64encode(b'[1, "x", [true], 5]').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe" * 50).decode(),
        "A" * 8192,
    ],
)
async def test_a_forged_or_garbage_cursor_is_a_typed_error(client: Client, cursor: str) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        await _raw(client, _query(client, "run.list"), {"type": "ListRuns", "cursor": cursor})


async def test_a_forged_cursor_of_the_right_shape_only_moves_the_page(client: Client) -> None:
    """A cursor names a position, never SQL: one made by hand for the same query is read
    as a position (its values travel as parameters), whatever text it holds."""
    body = {"type": "ListRuns", "order_by": ["name"], "limit": 5}
    first = await _raw(client, _query(client, "run.list"), body)
    assert isinstance(first, QueryResult) and first.data["next_cursor"] is None
    fingerprint = hashlib.sha256(json.dumps([None, None, "", ["name"]]).encode()).hexdigest()[:16]
    forged = json.dumps([1, fingerprint, ["'; DROP TABLE runs; --"], "x' OR 1=1"])
    cursor = base64.urlsafe_b64encode(forged.encode()).decode()
    page = await _raw(client, _query(client, "run.list"), {**body, "cursor": cursor})
    assert isinstance(page, QueryResult) and page.data["runs"] == []


@pytest.mark.parametrize(
    "garbage",
    [
        "metrics.loss < 1; DROP TABLE runs",
        "name = 'x' UNION SELECT * FROM sqlite_master",
        "tags.`a` = 'b' OR 1 = 1",
        "tags.a = 'b' -- comment",
        "name = 'x' AND \x00",
        "tags.`\x01` = 'a'",
        "metrics.loss < 1e400",
        "metrics.loss < NaN",
        "((((",
        "))))",
        "name LIKE",
        "IN ('a')",
        "AND AND",
        "" + "name = 'x' AND " * 70 + "name = 'y'",
        "\u202e name = 'x'",
    ],
)
async def test_filter_garbage_is_a_typed_error_and_the_service_keeps_serving(
    client: Client, garbage: str
) -> None:
    with pytest.raises(InvalidInput, match="filter"):
        await _raw(client, _query(client, "run.list"), {"type": "ListRuns", "filter": garbage})
    ok = await _raw(client, _query(client, "run.list"), {"type": "ListRuns"})
    assert isinstance(ok, QueryResult)


async def test_order_by_garbage_is_a_typed_error(client: Client) -> None:
    for order in (["name; DROP TABLE runs"], ["name ASC, run_id"], [""], ["tags."], [1]):
        with pytest.raises(InvalidInput, match="order_by"):
            await _raw(client, _query(client, "run.list"), {"type": "ListRuns", "order_by": order})


async def test_an_event_no_read_model_can_apply_is_quarantined_and_all_keep_serving(
    client: Client, conn: Connection, client_settings: Settings, tmp_path: Path
) -> None:
    """Appended straight to the streams by the service identity (past every command check):
    an assignment whose attempt is 2**63, and a metric batch whose step is."""
    ws = client.workspace
    run_id = _id()
    poisoned = await conn.js.publish(
        subjects.event(ws, "run", run_id), _poisoned_assignment(ws, run_id)
    )
    batch = {
        "batch_id": _id(),
        "workspace": ws,
        "run_id": run_id,
        "experiment_id": "e1",
        "actor": "admin",
        "points": [["n", "scalar", 1, BIG, 1.0]],
    }
    metrics = await conn.js.publish(subjects.metrics(ws, run_id), json.dumps(batch).encode())

    # every read model moves past them and answers, here and in another workspace
    await client.send(CreateExperiment(command_id=_id(), name="after"))
    after = await client.send(CreateRun(command_id=_id(), run_id=_id(), experiment_name="after"))
    assert after.seq > poisoned.seq
    got = await client.ask(GetRun(run_id=after.aggregate_id, min_seq=after.seq))
    assert got.data["run_id"] == after.aggregate_id
    assert (await client.ask(ListJobs(min_seq=after.seq))).seq >= poisoned.seq
    read = GetMetrics(run_id=after.aggregate_id, min_seq=metrics.seq)
    assert (await client.ask(read)).data == {}
    other = Client(client.conn, "t" + _id())
    await other.send(CreateWorkspace(command_id=_id(), name=other.workspace))
    assert (await other.ask(ListExperiments(min_seq=after.seq))).data == []

    # `cairn status` counts them per read model; a retry applies nothing (they are still bad)
    env = sdk_env(client_settings, ws, tmp_path / "home")
    report = await cli_json("status", env=env, cwd=tmp_path)
    held = {
        (m["read_model"], e["seq"])
        for m in report["read_models"]
        if "read_model" in m
        for e in m["events"]
    }
    assert ("scheduler", poisoned.seq) in held and ("metrics", metrics.seq) in held
    counts = {m["read_model"]: m["quarantined"] for m in report["read_models"] if "events" in m}
    assert counts["scheduler"] >= 1 and counts["metrics"] >= 1
    rows = await cli_json("projection", "retry", "metrics", env=env, cwd=tmp_path)
    assert [r["read_model"] for r in rows] == ["metrics"]
    assert rows[0]["retried"] >= 1 and rows[0]["quarantined"] >= 1
    again = await cli_json("status", env=env, cwd=tmp_path)
    assert any(
        e["seq"] == metrics.seq
        for m in again["read_models"]
        if m.get("read_model") == "metrics"
        for e in m["events"]
    )


# -- 2. unknown fields ------------------------------------------------------------------------


async def test_unknown_fields_in_queries_and_commands_are_refused_by_name(client: Client) -> None:
    with pytest.raises(InvalidInput, match="as_of_sequence"):  # a typo of as_of_seq
        body = {"type": "GetRun", "run_id": "r1", "as_of_sequence": 3}
        await _raw(client, _query(client, "run.get"), body)
    with pytest.raises(InvalidInput, match="nmae"):
        body = {"type": "CreateExperiment", "command_id": _id(), "name": "e", "nmae": "e"}
        await _raw(client, _cmd(client, "experiment.create"), body)
    job = {"command": ["true"], "timeout": 5}  # a typo of timeout_s, nested
    body = {
        "type": "SubmitJob",
        "command_id": _id(),
        "run_id": _id(),
        "experiment_name": "e",
        "job": job,
    }
    with pytest.raises(InvalidInput, match="timeout"):
        await _raw(client, _cmd(client, "job.submit"), body)
    with pytest.raises(msgspec.ValidationError, match="as_of_sequence"):
        msgspec.json.decode(b'{"type": "GetRun", "run_id": "r", "as_of_sequence": 1}', type=GetRun)


# -- 3. control and bidirectional characters in names ----------------------------------------

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
LRI = "\u2066"  # LEFT-TO-RIGHT ISOLATE


def test_names_with_control_characters_are_refused_where_they_are_made() -> None:
    with pytest.raises(InvalidInput, match=r"U\+202E"):
        CreateExperiment(command_id="c1", name=f"exp{RLO}gpj.exe")
    with pytest.raises(InvalidInput, match=r"U\+2066"):
        SetRunTags(command_id="c1", run_id="r1", tags={f"k{LRI}": "v"})
    with pytest.raises(InvalidInput, match=r"U\+0085"):
        CreateRun(command_id="c1", run_id="r1", experiment_name="e", display_name="a\x85b")
    with pytest.raises(InvalidName, match=r"U\+202E"):
        validate_run_path(f"outputs/{RLO}txt.exe")
    with pytest.raises(InvalidName, match=r"U\+2066"):
        subjects.validate_token(f"ws{LRI}", "workspace")
    with pytest.raises(InvalidName, match=r"U\+202E"):
        subjects.name_to_id(f"model{RLO}")


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("experiment.create", {"type": "CreateExperiment", "name": f"e{RLO}"}),
        ("run.tag", {"type": "SetRunTags", "run_id": "r1", "tags": {f"k{LRI}": "v"}}),
        ("model.register", {"type": "RegisterModelVersion", "name": f"m{RLO}", "path": "x"}),
        (
            "environment.register",
            {"type": "RegisterEnvironment", "name": f"env{RLO}", "spec": {"type": "environment"}},
        ),
        (
            "dataset.register",
            {
                "type": "RegisterDataset",
                "name": f"d{RLO}",
                "spec": {"type": "dataset", "kind": "file", "paths": []},
            },
        ),
        (
            "datastore.register",
            {
                "type": "RegisterDatastore",
                "name": f"ds{RLO}",
                "spec": {"type": "datastore", "kind": "local", "path": "/x"},
            },
        ),
        (
            "compute.create",
            {
                "type": "CreateCompute",
                "name": f"gpu{LRI}",
                "spec": {"type": "compute", "kind": "local"},
            },
        ),
    ],
)
async def test_names_with_control_characters_are_refused_on_the_wire(
    client: Client, verb: str, body: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput, match=r"U\+(202E|2066)"):
        await _raw(client, _cmd(client, verb), {**body, "command_id": _id()})


async def test_run_file_paths_with_control_characters_are_refused(client: Client) -> None:
    await client.send(CreateExperiment(command_id=_id(), name="paths"))
    run = await client.send(CreateRun(command_id=_id(), run_id=_id(), experiment_name="paths"))
    upload = OpenUpload(
        command_id=_id(), run_id=run.aggregate_id, path=f"out/{RLO}gnp.exe", size=1, data=b"x"
    )
    with pytest.raises(InvalidName, match=r"U\+202E"):
        await client.send_any(upload)


# -- 4. archives ------------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def _archive(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            data = b"pwned" if member.isfile() else b""
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data else None)
    return path


def _everything(root: Path) -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def _cve_2025_4517(path: Path) -> Path:
    """The shape of the CVE-2025-4517 archive: folders with long names, a one-letter link to
    each, a link deep in the chain back up to the top (each step harmless when read alone),
    then a link through it one level further up, and a file written through that link."""
    long = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[tarfile.TarInfo] = []
    folder = ""
    for step in steps:
        members.append(_member(os.path.join(folder, long), tarfile.DIRTYPE, mode=0o755))
        members.append(_member(os.path.join(folder, step), tarfile.SYMTYPE, long))
        folder = os.path.join(folder, long)
    deep = os.path.join(*steps, "l" * 254)
    members.append(_member(deep, tarfile.SYMTYPE, "../" * len(steps)))
    members.append(_member("escape", tarfile.SYMTYPE, deep + "/../.."))
    members.append(_member("escape/evil.txt"))
    return _archive(path, members)


def _links_only_chain(path: Path) -> Path:
    """The same chain with every link where it may be made (never under another link): only
    the resolution of the last one through the others shows it leaves."""
    members = [
        _member("x/y/z", tarfile.DIRTYPE, mode=0o755),
        _member("x/y/z/top", tarfile.SYMTYPE, "../../.."),  # back to the top: inside
        _member("x/y/z/up", tarfile.SYMTYPE, "top/.."),  # lexically x/y/z: one above the top
        _member("x/y/z/up2", tarfile.SYMTYPE, "up/etc"),
    ]
    return _archive(path, members)


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([_member("../evil.txt")], "leaves"),
        ([_member("/abs.txt")], "leaves"),
        ([_member("a/../../evil.txt")], "leaves"),
        ([_member("l", tarfile.SYMTYPE, "/etc"), _member("l/passwd")], "links out"),
        ([_member("l", tarfile.SYMTYPE, "sub"), _member("l/passwd")], "through a link"),
        ([_member("hard", tarfile.LNKTYPE, "/etc/passwd")], "hard link"),
        ([_member("pipe", tarfile.FIFOTYPE)], "fifo"),
        ([_member("dev", tarfile.CHRTYPE)], "device"),
        ([_member("run.sh", mode=0o4755)], "setuid"),
        ([_member("twice.txt"), _member("twice.txt")], "twice"),
    ],
)
def test_hostile_archive_members_are_refused_and_nothing_is_left(
    tmp_path: Path, members: list[tarfile.TarInfo], why: str
) -> None:
    archive = _archive(tmp_path / "bad.tar", [_member("fine.txt"), *members])
    job = tmp_path / "job"
    job.mkdir()
    (job / "src").mkdir()  # the agent makes the folder first
    before = _everything(tmp_path)
    with pytest.raises(SnapshotRefused, match=why):
        unpack(archive, job / "src")
    assert _everything(tmp_path) == before  # no partial output, no temporary folder


@pytest.mark.parametrize("build", [_cve_2025_4517, _links_only_chain])
def test_a_chain_of_links_that_leaves_through_each_other_is_refused(
    tmp_path: Path, build: Any
) -> None:
    archive = build(tmp_path / "chain.tar")
    sandbox = tmp_path / "sandbox"
    (sandbox / "job").mkdir(parents=True)
    with pytest.raises(SnapshotRefused):
        unpack(archive, sandbox / "job" / "src")
    assert _everything(sandbox) == {"job"}
    assert not (tmp_path / "evil.txt").exists() and not (sandbox / "evil.txt").exists()


def test_links_that_stay_inside_unpack_into_a_folder_renamed_into_place(tmp_path: Path) -> None:
    archive = _archive(
        tmp_path / "ok.tar",
        [
            _member("pkg", tarfile.DIRTYPE, mode=0o755),
            _member("pkg/util.py"),
            _member("pkg/alias", tarfile.SYMTYPE, "util.py"),
            _member("top", tarfile.SYMTYPE, "pkg/../pkg/alias"),
        ],
    )
    unpack(archive, tmp_path / "src")
    assert (tmp_path / "src" / "top").read_bytes() == b"pwned"
    assert _everything(tmp_path) == {
        "ok.tar",
        "src",
        "src/pkg",
        "src/pkg/util.py",
        "src/pkg/alias",
        "src/top",
    }
    with pytest.raises(InvalidInput, match="not an empty folder"):
        unpack(archive, tmp_path / "src")  # never over something already there


# -- 5. datastores rooted outside the allowed roots -------------------------------------------


async def test_local_datastores_only_under_the_allowed_roots(
    client: Client, tmp_path: Path
) -> None:
    def register(name: str, path: str) -> RegisterDatastore:
        spec = DatastoreSpec(kind="local", path=path)
        return RegisterDatastore(command_id=_id(), name=name, spec=spec)

    for path in ("/", "/etc", str(Path.home())):
        with pytest.raises(PermissionDenied, match="datastore_roots"):
            await client.send(register("host", path))
    (tmp_path / "to-root").symlink_to("/")
    with pytest.raises(PermissionDenied, match="datastore_roots"):
        await client.send(register("host", str(tmp_path / "to-root" / "etc")))
    with pytest.raises(InvalidInput, match="absolute"):
        await client.send(register("host", "relative/data"))
    await client.send(register("lake", str(tmp_path / "lake")))  # under the tests' root


# -- 6. job files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "where", "expression"),
    [
        ("command: echo ${{inputs.a.b}}\ninputs: {a: 1}\n", "command", "${{inputs.a.b}}"),
        ("command: echo ${{parent.jobs.x.outputs.y}}\n", "command", "${{parent.jobs"),
        (
            "command: echo hi\ninputs: {a: 1}\nenvironment_variables: {X: '${{inputs.a}}'}\n",
            "environment_variables.X",
            "${{inputs.a}}",
        ),
        ("command: echo hi\ndisplay_name: '${{name}}'\n", "display_name", "${{name}}"),
        ("command: echo ${{inputs.a\ninputs: {a: 1}\n", "command", "unclosed"),
    ],
)
def test_unknown_job_file_expressions_are_refused_by_path(
    tmp_path: Path, yaml_text: str, where: str, expression: str
) -> None:
    job = tmp_path / "job.yml"
    job.write_text(yaml_text)
    with pytest.raises(InvalidInput) as info:
        load_job_file(job)
    assert f"{where}:" in info.value.message and expression in info.value.message


def test_known_job_file_expressions_still_work(tmp_path: Path) -> None:
    job = tmp_path / "job.yml"
    job.write_text(
        "command: python t.py --a ${{inputs.a}} --o ${{ outputs.m }}\n"
        "inputs: {a: 'x y'}\noutputs: {m: {type: uri_folder}}\n"
    )
    _, config = load_job_file(job)
    assert config.command[-1] == "python t.py --a 'x y' --o ${{ outputs.m }}"


# -- 7. downloads ------------------------------------------------------------------------------

_DOWNLOAD = """
import json, sys
from cairn.errors import CairnError
from cairn.sdk import Experiment, Run, Workspace
ws = Workspace()
run = Run(Experiment(ws, sys.argv[1]), sys.argv[2])
try:
    run.download_files(output_directory=sys.argv[3])
    print(json.dumps(None))
except CairnError as exc:
    print(json.dumps([exc.code, exc.message]))
"""


async def test_download_files_refuses_a_path_from_the_log_that_leaves_the_folder(
    ws: AsyncWorkspace,
    client: Client,
    conn: Connection,
    client_settings: Settings,
    tmp_path: Path,
) -> None:
    run = await (await ws.experiment("downloads")).start_run()
    src = tmp_path / "a.txt"
    src.write_text("a")
    await run.upload_file("a.txt", src)
    (legit,) = await run.files()
    escaped = f"escaped-{_id()}.txt"
    event = ArtifactCommitted(
        run_id=run.id, path=f"../{escaped}", digest=legit["digest"], size=legit["size"]
    )
    forged = _run_event(ws.name, run.id, event)
    ack = await conn.js.publish(subjects.event(ws.name, "run", run.id), encode_envelope(forged))
    await client.ask(ListRunFiles(run_id=run.id, min_seq=ack.seq))
    folder = tmp_path / "dl"
    folder.mkdir()
    env = sdk_env(client_settings, ws.name, tmp_path / "home")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DOWNLOAD,
        "downloads",
        run.id,
        str(folder / "out"),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    code, message = json.loads(out.decode().strip().splitlines()[-1])
    assert code == "invalid_name" and escaped in message
    assert not (folder / escaped).exists()
    assert _everything(folder) <= {"out"}  # nothing outside the target folder
    await run.complete()


async def test_a_datastore_download_does_not_follow_a_link_out_of_the_folder(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.txt").write_text("x")
    target, outside = tmp_path / "target", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (target / "sub").symlink_to(outside)  # left there by whatever wrote the folder before
    entry = Entry("sub/x.txt", 1, "")
    with pytest.raises(InvalidName, match="leads out"):
        await download_entries(
            LocalStore("store", root), [entry], target, overwrite=True, show=False
        )
    assert list(outside.iterdir()) == []
