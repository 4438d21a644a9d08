"""A job is confined to its run: no credentials, no agent files, no environment of its agent,
and a way out (its agent's socket) that forwards only what concerns its own run."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import uuid
from pathlib import Path

import msgspec
import pytest

from cairn.bus import Connection, connect
from cairn.bus._link import AgentLink
from cairn.errors import PermissionDenied, StaleAttempt, Unavailable
from cairn.proto.commands import (
    CreateExperiment,
    CreateRun,
    GetRun,
    HeartbeatRun,
    ListExperiments,
    StartRun,
)
from cairn.proto.metrics import LogMetrics, MetricPoint
from cairn.proto.parallel import TakeMiniBatch
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from cairn.services.agent import _landlock
from cairn.services.agent._gate import JobGate
from cairn.settings import Settings
from tests.conftest import Agents

#: what the job's script tries; each probe prints one JSON line the test reads back
PROBES = """
import asyncio, json, os, sys, time, uuid
from cairn.sdk import Run
from cairn.errors import CairnError
from cairn.proto.commands import CreateRun, CreateWorkspace, ListExperiments, GetRun
from cairn.proto.jobs import ClaimJob, FinishJob, JobSpec, SubmitJob
from cairn.proto.metrics import LogMetrics, MetricPoint
from cairn.rpc import Client

other_run, nats_url, agent_file = sys.argv[1], sys.argv[2], sys.argv[3]
seen = {}
try:
    open(agent_file).read()
    seen["agent_file"] = "read"
except OSError as exc:
    seen["agent_file"] = type(exc).__name__
import tempfile
with tempfile.NamedTemporaryFile() as scratch:  # TMPDIR is a folder of its own
    seen["tmp_ok"] = True
seen["cairn_env"] = sorted(k for k in os.environ if k.startswith("CAIRN_"))
seen["agent_secret"] = os.environ.get("AGENT_ONLY_SECRET")
seen["home"] = os.environ["CAIRN_HOME"]

run = Run.get_context()
run.log("own", 1.0)
child = run.child_run("child")
child.log("in_child", 2.0)
child.complete()
seen["child"] = child.id
run.upload_file("outputs/note.txt", __file__)
run.flush()
ws = run.experiment.workspace
client = ws.core.client


def point(value):
    return [MetricPoint("evil", "scalar", value, 0, time.time())]


def new_id():
    return uuid.uuid4().hex


probes = {
    "other_run_metrics": LogMetrics(command_id=new_id(), run_id=other_run, points=point(666)),
    "claim": ClaimJob(command_id=new_id(), run_id=run.id, queue_n=1, agent_id="evil"),
    "finish_own": FinishJob(command_id=new_id(), run_id=run.id, attempt=1,
                            outcome="completed"),
    "finish_other": FinishJob(command_id=new_id(), run_id=other_run, attempt=1,
                              outcome="completed"),
    "submit": SubmitJob(command_id=new_id(), run_id=new_id(), experiment_name="x",
                        job=JobSpec(command=["true"])),
    "workspace": CreateWorkspace(command_id=new_id(), name="elsewhere"),
    "orphan_run": CreateRun(command_id=new_id(), run_id=new_id(), experiment_name="x"),
}


async def try_all():
    out = {}
    for name, cmd in probes.items():
        try:
            await client.send_any(cmd)
            out[name] = "allowed"
        except CairnError as exc:
            out[name] = type(exc).__name__
    try:  # a query of its own workspace is fine
        await client.ask(GetRun(run_id=run.id))
        out["own_query"] = "allowed"
    except CairnError as exc:
        out["own_query"] = type(exc).__name__
    try:
        await Client(client.conn, "elsewhere").ask(ListExperiments())
        out["other_workspace_query"] = "allowed"
    except CairnError as exc:
        out["other_workspace_query"] = type(exc).__name__
    try:
        await client.conn.nc.subscribe(">")
        out["subscribe"] = "allowed"
    except CairnError as exc:
        out["subscribe"] = type(exc).__name__
    import nats
    try:  # straight to the server, with no credentials to offer
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0,
                                allow_reconnect=False)
        await nc.publish("cairn.metrics.x.y", b"{}")
        await nc.flush()
        out["raw_nats"] = "allowed"
        await nc.close()
    except Exception as exc:
        out["raw_nats"] = type(exc).__name__
    return out


seen.update(ws._run(try_all()))
print("PROBES " + json.dumps(seen), flush=True)
"""


def _source(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / "job.py").write_text(textwrap.dedent(body))
    return folder


def _probes(printed: list[str]) -> dict[str, object]:
    for line in "".join(printed).splitlines():
        if line.startswith("PROBES "):
            found: dict[str, object] = json.loads(line.removeprefix("PROBES "))
            return found
    raise AssertionError("the job printed no probes:\n" + "".join(printed))


async def test_a_job_acts_for_its_own_run_and_nothing_else(
    ws: AsyncWorkspace,
    agents: Agents,
    client_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_ONLY_SECRET", "s3cr3t")  # in the agent's environment only
    other = await (await ws.experiment("elsewhere")).start_run()
    agent_file = _agent_file(agents)
    await agents.start()
    config = ScriptRunConfig(
        source_directory=_source(tmp_path, PROBES),
        script="job.py",
        arguments=[other.id, client_settings.nats_url, str(agent_file)],
    )
    run_id = await submit(ws, "confined", config)
    printed: list[str] = []
    details = await follow(ws, run_id, out=printed.append, timeout=90)
    assert details["status"] == "Completed", "".join(printed)
    seen = _probes(printed)
    # no credentials and none of the agent's environment; a home of its own
    assert seen["cairn_env"] == [
        "CAIRN_AGENT_SOCKET",
        "CAIRN_ATTEMPT",
        "CAIRN_EXPERIMENT",
        "CAIRN_HOME",
        "CAIRN_JOB_SITE",
        "CAIRN_RUN_ID",
        "CAIRN_WORKSPACE",
    ]
    assert seen["agent_secret"] is None
    assert seen["agent_file"] == "PermissionError" and seen["tmp_ok"]
    assert str(seen["home"]).endswith("/src/.cairn")
    assert not str(seen["home"]).startswith(str(agents.settings.home_path) + "/.cairn")
    for probe in (
        "other_run_metrics",
        "claim",
        "finish_own",
        "finish_other",
        "submit",
        "workspace",
        "orphan_run",
        "other_workspace_query",
        "subscribe",
    ):
        assert seen[probe] == "PermissionDenied", (probe, seen)
    assert seen["own_query"] == "allowed"
    assert seen["raw_nats"] != "allowed"
    # its own run works: metrics, a child run, a file
    run = ws.run(run_id)
    assert (await run.get_metrics("own"))["own"] == 1.0
    assert "outputs/note.txt" in {f["path"] for f in await run.files()}
    child = ws.run(str(seen["child"]))
    assert await child.get_status() == "Completed"
    assert (await child.get_metrics("in_child"))["in_child"] == 2.0
    assert await other.get_metrics("evil") == {}


async def _through(gate: JobGate, settings: Settings) -> Connection:
    """A job's connection to ``gate``, made as the SDK makes it inside a job."""
    return await connect(msgspec.structs.replace(settings, agent_socket=str(gate.path)))


def _agent_file(agents: Agents) -> Path:
    """A file in the agent's state folder, as its credentials and keys are in its home."""
    state = agents.settings.state_path
    state.mkdir(parents=True, exist_ok=True)
    secret = state / "agent-only.txt"
    secret.write_text("the agent's")
    return secret


@pytest.mark.skipif(_landlock.abi() < 1, reason="this kernel has no Landlock")
@pytest.mark.parametrize("warm", [True, False])
async def test_a_process_job_cannot_read_its_agents_files(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path, warm: bool
) -> None:
    """Forked from the warm interpreter or started cold (a shell command): the agent's
    files are out of reach, the job's own folder is not."""
    agent_file = _agent_file(agents)
    src = _source(tmp_path, "print('python job')\n")
    if warm:
        config = ScriptRunConfig(source_directory=src, script="job.py")
        script = f"import sys; open({str(agent_file)!r}).read()"
        (src / "job.py").write_text(script)
    else:
        config = ScriptRunConfig(
            source_directory=src,
            command=["/bin/sh", "-c", f"echo mine > outputs/mine.txt && cat {agent_file}"],
        )
    await agents.start()
    run_id = await submit(ws, "confined", config)
    printed: list[str] = []
    details = await follow(ws, run_id, out=printed.append, timeout=60)
    output = "".join(printed)
    assert details["status"] == "Failed", output
    assert "Permission denied" in output or "PermissionError" in output, output
    assert "the agent's" not in output
    if not warm:
        assert "outputs/mine.txt" in {f["path"] for f in await ws.run(run_id).files()}


async def test_the_gate_refuses_before_anything_reaches_a_service(
    client_conn: Connection, client: Client, agent_conn: Connection
) -> None:
    """The table of what a job may send, against the gate on a real connection: refusals
    are ``PermissionDenied`` and closing the gate revokes the link."""
    run_id = uuid.uuid4().hex
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="gated"))
    await client.send(
        CreateRun(command_id=uuid.uuid4().hex, run_id=run_id, experiment_name="gated")
    )
    gate = JobGate(
        agent_conn.nc, workspace=client.workspace, run_id=run_id, attempt=1, experiment="gated"
    )
    await gate.open()
    gate.admit(os.getsid(0))  # this test's process is the job's
    job = Client(await _through(gate, client_conn.settings), client.workspace)

    def metrics(run: str, attempt: int | None = None) -> LogMetrics:
        point = MetricPoint("m", "scalar", 1.0, 0, 1.0)
        return LogMetrics(command_id=uuid.uuid4().hex, run_id=run, points=[point], attempt=attempt)

    def take(run: str, attempt: int) -> TakeMiniBatch:
        return TakeMiniBatch(command_id=uuid.uuid4().hex, run_id=run, attempt=attempt, step="s")

    await job.send(metrics(run_id))  # its own run
    child = uuid.uuid4().hex
    await job.send(
        CreateRun(
            command_id=uuid.uuid4().hex,
            run_id=child,
            experiment_name="gated",
            parent_run_id=run_id,
        )
    )
    await job.send(metrics(child))  # a child it created
    await job.send(StartRun(command_id=uuid.uuid4().hex, run_id=child))
    await job.send(HeartbeatRun(command_id=uuid.uuid4().hex, run_id=child))  # it beats for it
    refused = [
        HeartbeatRun(command_id=uuid.uuid4().hex, run_id=run_id),  # its own run: its agent's
        metrics(uuid.uuid4().hex),  # someone else's run
        metrics(run_id, attempt=2),  # another attempt of its run
        CreateExperiment(command_id=uuid.uuid4().hex, name="another"),
        CreateRun(command_id=uuid.uuid4().hex, run_id=uuid.uuid4().hex, experiment_name="gated"),
        take(uuid.uuid4().hex, 1),  # mini-batches for another run
        take(run_id, 2),  # or for another attempt of its own
    ]
    # its own run and attempt reach the pipelines service, which finds no running attempt
    with pytest.raises(StaleAttempt):
        await job.send_any(take(run_id, 1))
    for cmd in refused:
        with pytest.raises(PermissionDenied):
            await job.send(cmd)
    with pytest.raises(PermissionDenied, match="own workspace"):
        await Client(job.conn, "another-ws").ask(ListExperiments())
    assert (await job.ask(ListExperiments())).data  # its workspace's queries pass
    await gate.close()
    with pytest.raises(Unavailable):
        await job.send(metrics(run_id))
    with pytest.raises(Unavailable):
        await AgentLink(str(gate.path)).open()
    await job.conn.close()
    assert not gate.path.parent.exists(), "the gate's folder is removed"


async def test_a_serving_replica_may_send_nothing_through_its_gate(
    client_conn: Connection, client: Client, agent_conn: Connection
) -> None:
    """A replica needs no authority of its own: its agent takes the deployment's requests
    and reports for it. Its gate refuses its own run's metrics, any query and any command,
    so its ``run()`` cannot log, read other runs or act for anyone."""
    run_id = uuid.uuid4().hex
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="served"))
    await client.send(
        CreateRun(command_id=uuid.uuid4().hex, run_id=run_id, experiment_name="served")
    )
    other = uuid.uuid4().hex
    await client.send(
        CreateRun(command_id=uuid.uuid4().hex, run_id=other, experiment_name="served")
    )
    gate = JobGate(
        agent_conn.nc,
        workspace=client.workspace,
        run_id=run_id,
        attempt=1,
        experiment="served",
        replica=True,
    )
    await gate.open()
    gate.admit(os.getsid(0))
    replica = Client(await _through(gate, client_conn.settings), client.workspace)
    try:
        point = MetricPoint("m", "scalar", 1.0, 0, 1.0)
        for cmd in [
            LogMetrics(command_id=uuid.uuid4().hex, run_id=run_id, points=[point]),
            LogMetrics(command_id=uuid.uuid4().hex, run_id=other, points=[point]),
            CreateRun(
                command_id=uuid.uuid4().hex,
                run_id=uuid.uuid4().hex,
                experiment_name="served",
                parent_run_id=run_id,
            ),
            HeartbeatRun(command_id=uuid.uuid4().hex, run_id=run_id),
        ]:
            with pytest.raises(PermissionDenied, match="serving replica"):
                await replica.send(cmd)
        for query in [GetRun(run_id=other), ListExperiments()]:
            with pytest.raises(PermissionDenied, match="serving replica"):
                await replica.ask(query)
    finally:
        await replica.conn.close()
        await gate.close()


async def test_a_process_of_another_session_is_not_let_in(
    client: Client, agent_conn: Connection
) -> None:
    """Another job of the same OS user could find a gate's socket path in /proc/net/unix:
    the gate lets in only processes of its own job's session."""
    gate = JobGate(
        agent_conn.nc, workspace=client.workspace, run_id="r2", attempt=1, experiment="e"
    )
    await gate.open()
    gate.admit(os.getsid(0) + 1_000_000)  # a session this test's process is not in
    try:
        job = Client(await _through(gate, client.conn.settings), "x")
        with pytest.raises(Unavailable):
            await job.ask(ListExperiments())
        await job.conn.close()
    finally:
        await gate.close()


@pytest.mark.timeout(1200)  # a first run installs docker.io and debootstraps the base image
async def test_a_docker_job_sees_no_agent_files_and_still_reaches_its_run(
    docker_engine: None, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    home = agents.settings.home_path
    src = _source(
        tmp_path,
        f"""
        import os
        from cairn.sdk import Run
        visible = [p for p in ({str(home)!r}, {str(home / "credentials.json")!r})
                   if os.path.exists(p)]
        print("VISIBLE", visible, flush=True)
        run = Run.get_context()
        run.log("from_container", 3.0)
        """,
    )
    await agents.start(backend="docker", slots=1)
    run_id = await submit(ws, "docker", ScriptRunConfig(source_directory=src, script="job.py"))
    printed: list[str] = []
    details = await follow(ws, run_id, out=printed.append, timeout=300)
    assert details["status"] == "Completed", (details.get("error"), "".join(printed))
    assert "VISIBLE []" in "".join(printed)
    assert (await ws.run(run_id).get_metrics("from_container"))["from_container"] == 3.0


async def test_a_bad_frame_closes_the_link_and_the_gate_keeps_serving(
    client: Client, agent_conn: Connection
) -> None:
    gate = JobGate(
        agent_conn.nc, workspace=client.workspace, run_id="r1", attempt=1, experiment="e"
    )
    await gate.open()
    gate.admit(None)
    try:
        reader, writer = await asyncio.open_unix_connection(str(gate.path))
        writer.write(b"\xff\xff\xff\xff")  # a length far beyond any frame
        await writer.drain()
        assert await reader.read() == b""  # the gate hung up
        writer.close()
        job = Client(await _through(gate, client.conn.settings), "x")
        with pytest.raises(PermissionDenied):
            await job.ask(ListExperiments())
        await job.conn.close()
    finally:
        await gate.close()


@pytest.mark.timeout(1200)  # a first run installs docker.io and debootstraps the base image
async def test_the_docker_backend_unpacks_snapshots_in_a_throwaway_container(
    docker_engine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's host never extracts a Docker job's archive: with the host's extraction
    broken, a good archive still unpacks; a hostile one is refused and leaves nothing."""
    import tarfile

    from cairn.services.agent import _backends
    from cairn.snapshot import SnapshotRefused
    from tests.test_hostile_inputs import _archive, _cve_2025_4517, _everything, _member

    def on_the_host(*_: object) -> None:
        raise AssertionError("unpacked on the agent's host")

    monkeypatch.setattr(_backends, "unpack", on_the_host)
    backend = _backends.DockerBackend(tmp_path / "docker")
    try:
        good = _archive(
            tmp_path / "good.tar",
            [_member("pkg", tarfile.DIRTYPE, mode=0o755), _member("pkg/util.py")],
        )
        (tmp_path / "job" / "src").mkdir(parents=True)
        await backend.unpack(good, tmp_path / "job" / "src")
        assert (tmp_path / "job" / "src" / "pkg" / "util.py").read_bytes() == b"pwned"
        sandbox = tmp_path / "sandbox"
        (sandbox / "job" / "src").mkdir(parents=True)
        with pytest.raises(SnapshotRefused, match=r"links out|placed through"):
            await backend.unpack(_cve_2025_4517(tmp_path / "chain.tar"), sandbox / "job" / "src")
        assert _everything(sandbox) == {"job", "job/src"}
        assert not (tmp_path / "evil.txt").exists()
    finally:
        backend.close()


LANDLOCK_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import _landlock
walled, allowed, probes = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
_landlock.restrict(_landlock.plan([walled], [(allowed, _landlock.READ)]))
seen = {}
for path in probes:
    try:
        open(path).read()
        seen[path] = "read"
    except OSError as exc:
        seen[path] = type(exc).__name__
print(json.dumps(seen))
"""


@pytest.mark.skipif(_landlock.abi() < 1, reason="this kernel has no Landlock")
def test_links_do_not_open_a_way_into_the_wall(tmp_path: Path) -> None:
    """A link to a folder on the way to the protected one, or into it, grants nothing
    beneath it; what lies beside the wall and what is allowed inside it stay readable."""
    import subprocess
    import sys

    home = tmp_path / "home"
    (home / "job").mkdir(parents=True)
    (home / "keys.txt").write_text("key")
    (home / "job" / "mine.txt").write_text("mine")
    (tmp_path / "beside.txt").write_text("beside")
    (tmp_path.parent / f"{tmp_path.name}-current").symlink_to(tmp_path)  # as pytest makes
    (tmp_path / "into").symlink_to(home)
    probes = {
        str(home / "keys.txt"): "PermissionError",
        str(tmp_path.parent / f"{tmp_path.name}-current" / "home" / "keys.txt"): "PermissionError",
        str(tmp_path / "into" / "keys.txt"): "PermissionError",
        str(tmp_path / "beside.txt"): "read",
        str(home / "job" / "mine.txt"): "read",
    }
    here = str(Path(_landlock.__file__).parent)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LANDLOCK_PROBE,
            here,
            str(home),
            str(home / "job"),
            json.dumps(list(probes)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == probes
