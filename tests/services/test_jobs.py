"""Jobs end to end with in-process agents: submit, run, logs, outputs, cancel, timeout,
priority, bad submissions; the scheduler's decisions read back from the run's history."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import Connection, EventStore
from cairn.errors import AlreadyExists, InvalidInput, NotFound, StaleAttempt
from cairn.proto import subjects
from cairn.proto.assets import ComputeSpec, CreateCompute, DeleteCompute
from cairn.proto.commands import CreateExperiment, GetRun, QueryResult
from cairn.proto.jobs import ClaimJob, FinishJob, JobInput, JobSpec, ReportJob, SubmitJob
from cairn.proto.metrics import LogMetrics, MetricPoint
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from cairn.settings import Settings
from tests.conftest import Agents


def source(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(body))
    return folder


async def history(store: EventStore, ws: str, run_id: str) -> list[Any]:
    return [r.envelope.data for r in await store.read(subjects.event(ws, "run", run_id))]


async def wait_status(ws: AsyncWorkspace, run_id: str, wanted: Callable[[str], bool]) -> str:
    for _ in range(400):
        status = (await ws.client.ask(GetRun(run_id=run_id, wait_s=0))).data["status"]
        if wanted(status):
            return str(status)
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} stayed {status}")


async def test_a_script_job_runs_streams_logs_and_keeps_outputs(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    src = source(
        tmp_path,
        """
        import os, sys
        from cairn.sdk import Run
        run = Run.get_context()
        for i in range(3):
            run.log("loss", 1.0 / (i + 1))
            print("step", i, flush=True)
        print("to stderr", file=sys.stderr)
        os.makedirs("outputs", exist_ok=True)
        open("outputs/result.txt", "w").write("args=" + " ".join(sys.argv[1:]))
        run.complete()
    """,
    )
    (src / "data").mkdir()
    (src / "data" / "big.bin").write_bytes(b"x" * 1000)
    (src / ".cairnignore").write_text("data/\n")
    await agents.start()
    config = ScriptRunConfig(source_directory=src, script="job.py", arguments=["--alpha", 0.5])
    run_id = await submit(ws, "jobs", config)
    printed: list[str] = []
    details = await follow(ws, run_id, out=printed.append, timeout=60)
    assert details["status"] == "Completed", details
    output = "".join(printed)
    assert "step 0\nstep 1\nstep 2\n" in output and "to stderr" in output
    run = ws.run(run_id)
    files = {f["path"] for f in await run.files()}
    assert files == {"outputs/result.txt", "user_logs/std_log.txt"}
    target = await run.download_file("outputs/result.txt", tmp_path / "result.txt")
    assert target.read_text() == "args=--alpha 0.5"
    metrics = await run.get_metrics("loss")
    assert metrics["loss"] == [1.0, 0.5, 1.0 / 3]
    events = [type(e).__name__ for e in await history(store, ws.name, run_id)]
    assert events[:3] == ["RunSubmitted", "RunAssigned", "RunStarted"]
    assert events[-1] == "RunCompleted"


async def test_a_failing_script_fails_the_run_with_its_exit_code(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    src = source(tmp_path, "import sys; print('bad'); sys.exit(3)\n")
    await agents.start()
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    details = await follow(ws, run_id, timeout=60)
    assert details["status"] == "Failed" and "code 3" in details["error"]
    last = (await history(store, ws.name, run_id))[-1]
    assert last.exit_code == 3 and last.attempt == 1


def _descendants(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == pid:
                    found.add(int(entry.name))
    return found


async def test_cancel_kills_the_process_tree_within_the_grace(
    ws: AsyncWorkspace, agents: Agents, client_settings: Settings, tmp_path: Path
) -> None:
    src = source(
        tmp_path,
        """
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stubborn: only SIGKILL ends it
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open("pids", "w").write(f"{os.getpid()} {child.pid}")
        print("ready", flush=True)
        time.sleep(600)
    """,
    )
    await agents.start()
    run_id = await submit(ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py"))
    printed: list[str] = []
    waiter = asyncio.create_task(follow(ws, run_id, out=printed.append, timeout=60))
    for _ in range(400):
        if "ready" in "".join(printed):
            break
        await asyncio.sleep(0.05)
    pids_file = next((tmp_path / "agent-state").rglob("pids"))
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(_alive(p) for p in pids)
    t0 = time.monotonic()
    await ws.run(run_id).cancel("enough")
    details = await waiter
    assert details["status"] == "Canceled"
    for _ in range(100):
        if not any(_alive(p) for p in pids):
            break
        await asyncio.sleep(0.05)
    took = time.monotonic() - t0
    assert not any(_alive(p) for p in pids), "the job's process tree survived the cancel"
    assert took < client_settings.job_cancel_grace_s + 1 + 1.5  # grace + 1 s, + test polling


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_job_past_its_timeout_is_stopped_and_fails(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    src = source(tmp_path, "import time; time.sleep(600)\n")
    await agents.start()
    config = ScriptRunConfig(source_directory=src, script="job.py", max_run_duration_seconds=1)
    run_id = await submit(ws, "jobs", config)
    details = await follow(ws, run_id, timeout=60)
    assert details["status"] == "Failed" and "timeout" in details["error"]


async def test_higher_priority_runs_first_and_a_queued_cancel_never_runs(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """One slot, one ticket out at a time (the test scheduler's window): while a blocker
    runs, a high-priority run submitted after a low one still goes first."""
    src = source(tmp_path, "import time, sys; time.sleep(float(sys.argv[2]))\n")
    runs = {}
    for name, priority, sleep in (
        ("blocker", 0, 1.0),
        ("low", 0, 0),
        ("high", 10, 0),
        ("dropped", 5, 0),
    ):
        config = ScriptRunConfig(
            source_directory=src, script="job.py", arguments=[name, sleep], priority=priority
        )
        runs[name] = await submit(ws, "jobs", config)
    await ws.run(runs["dropped"]).cancel()
    await agents.start(slots=1)
    started = {}
    for name in ("blocker", "low", "high"):
        details = await follow(ws, runs[name], timeout=60)
        assert details["status"] == "Completed"
        started[name] = details["start_time"]
    assert started["blocker"] < started["high"] < started["low"]
    dropped = await follow(ws, runs["dropped"], timeout=5)
    assert dropped["status"] == "Canceled" and dropped["start_time"] is None


async def test_a_slot_takes_the_next_job_once_the_process_has_exited(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    """A slot is a job's process: with one slot, the next job starts while the first is still
    uploading its large output, and both complete."""
    src = source(
        tmp_path,
        """
        import os, sys
        os.makedirs("outputs", exist_ok=True)
        if sys.argv[1] == "big":
            with open("outputs/big.bin", "wb") as f:
                f.write(os.urandom(96 * 1024 * 1024))
    """,
    )
    big = await submit(
        ws,
        "jobs",
        ScriptRunConfig(source_directory=src, script="job.py", arguments=["big"], priority=10),
    )
    small = await submit(
        ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py", arguments=["small"])
    )
    await agents.start(slots=1)
    for run_id in (big, small):
        assert (await follow(ws, run_id, timeout=120))["status"] == "Completed"
    seq = {}
    for name, run_id in (("big", big), ("small", small)):
        for r in await store.read(subjects.event(ws.name, "run", run_id)):
            seq[(name, type(r.envelope.data).__name__)] = r.seq
    assert seq[("big", "RunStarted")] < seq[("small", "RunStarted")]
    assert seq[("small", "RunStarted")] < seq[("big", "RunCompleted")]


async def test_only_progress_reports_write_lease_renewals(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, conn: Connection, tmp_path: Path
) -> None:
    """The claim and the start are in the log and start the lease; a job that ends before its
    first progress report writes nothing to the leases bucket. A longer one renews there (and
    keeps its one attempt past several leases), and its renewal is deleted when it ends."""
    from cairn.proto.streams import LEASES_BUCKET

    lease_s = agents.settings.job_lease_s
    src = source(
        tmp_path,
        """
        import sys, time
        time.sleep(float(sys.argv[1]))
    """,
    )
    kv = await conn.js.key_value(LEASES_BUCKET.bucket)  # the scheduler's bucket
    seen: list[tuple[str, str]] = []
    watcher = await kv.watchall(include_history=False)

    async def follow_bucket() -> None:
        async for entry in watcher:
            if entry is not None:
                seen.append((entry.key, entry.operation or "PUT"))

    following = asyncio.create_task(follow_bucket())
    await agents.start(slots=2)
    quick, slow = [
        await submit(
            ws, "jobs", ScriptRunConfig(source_directory=src, script="job.py", arguments=[str(t)])
        )
        for t in (0, lease_s * 2.5)
    ]
    for run_id in (quick, slow):
        assert (await follow(ws, run_id, timeout=60))["status"] == "Completed"
    await asyncio.sleep(0.5)
    following.cancel()
    await watcher.stop()
    assert not [op for key, op in seen if key.endswith(quick)]
    ops = [op for key, op in seen if key.endswith(slow)]
    assert ops.count("PUT") >= 3 and ops[-1] == "DEL"
    events = await history(store, ws.name, slow)
    assert [type(e).__name__ for e in events].count("RunAssigned") == 1


async def test_a_renewal_left_behind_for_an_ended_run_is_deleted(
    ws: AsyncWorkspace, agents: Agents, conn: Connection
) -> None:
    """A renewal another replica wrote for a run that has since ended (the replica recording
    the end had not seen it) is deleted by the scheduler's reconcile pass."""
    from cairn.proto.streams import LEASES_BUCKET

    await agents.start(slots=1)
    run_id = await submit(ws, "jobs", ScriptRunConfig(command=["true"]))
    assert (await follow(ws, run_id, timeout=60))["status"] == "Completed"
    kv = await conn.js.key_value(LEASES_BUCKET.bucket)  # the scheduler's bucket
    key = f"{ws.name}.{run_id}"
    await kv.put(key, b"[1, 0.0]")
    for _ in range(100):
        try:
            entry = await kv.get(key)
        except Exception:  # deleted (nats-py raises for a delete marker)
            return
        if not entry.value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the left-behind renewal was never deleted")


async def test_a_run_submitted_the_older_way_is_read_and_runs(
    ws: AsyncWorkspace, agents: Agents, store: EventStore
) -> None:
    """History written before a submission was one event (``RunCreated`` + ``RunSubmitted``
    in one atomic batch) still makes a job: the read models see the run and it completes."""
    from cairn.bus import AggregateCache, CommandContext, execute
    from cairn.domain import Aggregate
    from cairn.proto.events import Event, RunCreated, RunSubmitted

    exp = await ws.experiment("jobs")
    run_id = os.urandom(8).hex()
    job = JobSpec(command=["true"])
    events = [
        RunCreated(
            run_id=run_id, experiment_id=exp.id, experiment_name="jobs", display_name="old-style"
        ),
        RunSubmitted(run_id=run_id, compute="local", job=job),
    ]
    ctx = CommandContext(workspace=ws.name, command_id=os.urandom(8).hex(), actor="test")
    old_style: Aggregate[None, None] = Aggregate(
        kind="run",
        initial=None,
        evolve=lambda state, event: state,
        decide=lambda state, command: list[Event](events),
        commands=None,
    )
    await execute(ctx, old_style, run_id, None, cache=AggregateCache(store))
    await agents.start(slots=1)
    details = await follow(ws, run_id, timeout=60)
    assert details["status"] == "Completed"
    assert (details["display_name"], details["experiment_name"]) == ("old-style", "jobs")


async def test_bad_submissions_get_typed_errors(ws: AsyncWorkspace, tmp_path: Path) -> None:
    await ws.experiment("jobs")
    job = JobSpec(command=["python", "x.py"])

    def cmd(**kw: Any) -> SubmitJob:
        fields: dict[str, Any] = {
            "command_id": os.urandom(8).hex(),
            "run_id": os.urandom(8).hex(),
            "experiment_name": "jobs",
            "job": job,
            **kw,
        }
        return SubmitJob(**fields)

    with pytest.raises(NotFound, match="compute"):
        await ws.client.send(cmd(compute="nowhere"))
    with pytest.raises(NotFound, match="experiment"):
        await ws.client.send(cmd(experiment_name="never-made"))
    with pytest.raises(NotFound, match="environment"):
        await ws.client.send(cmd(environment_name="no-such-env"))
    with pytest.raises(InvalidInput, match="command"):
        await ws.client.send(cmd(job=JobSpec(command=[])))
    with pytest.raises(InvalidInput, match="not uploaded"):
        digest = "sha256:" + "0" * 64
        await ws.client.send(cmd(job=JobSpec(command=["x"], snapshot=digest, snapshot_area="a")))
    with pytest.raises(InvalidInput, match="max_attempts"):
        await ws.client.send(cmd(job=JobSpec(command=["x"], max_attempts=0)))
    with pytest.raises(InvalidInput, match="exactly one"):
        ScriptRunConfig(source_directory=tmp_path)
    # nothing was created by any of them
    assert await ws.experiment("jobs") and (await (await ws.experiment("jobs")).runs()) == []


async def test_a_model_input_is_pinned_to_a_version_at_submit(
    ws: AsyncWorkspace, store: EventStore, tmp_path: Path
) -> None:
    """An alias (or "latest") names a version when the job is submitted: the run records it,
    and moving the alias before an agent runs the job changes nothing for that run."""
    exp = await ws.experiment("pins")
    (tmp_path / "m.bin").write_bytes(b"weights")
    run = await exp.start_run()
    await run.upload_file("outputs/m.bin", tmp_path / "m.bin")
    await run.complete()
    for _ in range(3):
        await ws.models.register("pinned", "outputs/m.bin", run_id=run.id)
    await ws.models.set_alias("pinned", "prod", 2)

    async def submit_with(**model: Any) -> JobInput:
        run_id = os.urandom(8).hex()
        item = JobInput(name="m", model="pinned", **model)
        job = JobSpec(command=["ls"], inputs=[item])
        cid = os.urandom(8).hex()
        await ws.client.send(
            SubmitJob(command_id=cid, run_id=run_id, job=job, experiment_name="pins")
        )
        [pinned] = [
            e.job.inputs[0] for e in await history(store, ws.name, run_id) if hasattr(e, "job")
        ]
        return pinned

    by_alias = await submit_with(alias="prod")
    assert (by_alias.version, by_alias.alias) == (2, "prod")
    await ws.models.set_alias("pinned", "prod", 3)
    assert (await submit_with()).version == 3, "no version, no alias: the latest, pinned"
    assert (await submit_with(version=1)).version == 1
    with pytest.raises(InvalidInput, match="a model version or an alias, not both"):
        await submit_with(version=1, alias="prod")
    with pytest.raises(NotFound, match="no alias 'canary'"):
        await submit_with(alias="canary")
    with pytest.raises(NotFound, match="no model called 'never-registered'"):
        job = JobSpec(command=["ls"], inputs=[JobInput(name="m", model="never-registered")])
        await ws.client.send(
            SubmitJob(
                command_id="c-unknown-model",
                run_id="r-unknown-model",
                job=job,
                experiment_name="pins",
            )
        )
    assert len(await exp.runs()) == 4, "the refused submissions created no run"


async def test_a_replayed_submit_takes_effect_once_and_a_reused_run_id_is_refused(
    ws: AsyncWorkspace, store: EventStore
) -> None:
    """A submit decides on an empty history without reading the log; the CAS still finds the
    run a retry or a reused id meets: the retry gets the first reply, the reuse a typed error,
    and the run keeps its one submission."""
    await ws.experiment("jobs")
    run_id = os.urandom(8).hex()
    submit_cmd = SubmitJob(
        command_id=os.urandom(8).hex(),
        run_id=run_id,
        experiment_name="jobs",
        job=JobSpec(command=["true"]),
        display_name="once",
        tags={"team": "a"},
    )
    first = await ws.client.send(submit_cmd)
    again = await ws.client.send(submit_cmd)
    assert again.replayed and again.seq == first.seq
    run = (await ws.client.ask(GetRun(run_id=run_id, min_seq=first.seq))).data
    assert (run["status"], run["display_name"], run["tags"]) == ("Queued", "once", {"team": "a"})
    reused = msgspec.structs.replace(submit_cmd, command_id=os.urandom(8).hex())
    with pytest.raises(AlreadyExists):
        await ws.client.send(reused)
    assert [type(e).__name__ for e in await history(store, ws.name, run_id)] == ["RunSubmitted"]


async def test_a_resent_submit_is_a_replay_after_what_it_named_was_deleted(
    ws: AsyncWorkspace, store: EventStore
) -> None:
    """A submit whose reply was lost is sent again under its command id; by then its compute
    target may be gone. The copy is answered as the replay it is, not refused."""
    await ws.experiment("jobs")
    spec = ComputeSpec(kind="cluster", min_nodes=0, max_nodes=1)
    await ws.client.send(CreateCompute(command_id=os.urandom(8).hex(), name="brief", spec=spec))
    run_id = os.urandom(8).hex()
    submit_cmd = SubmitJob(
        command_id=os.urandom(8).hex(),
        run_id=run_id,
        experiment_name="jobs",
        compute="brief",
        job=JobSpec(command=["true"]),
    )
    first = await ws.client.send(submit_cmd)
    await ws.client.send(DeleteCompute(command_id=os.urandom(8).hex(), name="brief"))
    async with asyncio.timeout(30):  # until the scheduler has seen the deletion
        while True:
            other = msgspec.structs.replace(
                submit_cmd, command_id=os.urandom(8).hex(), run_id=os.urandom(8).hex()
            )
            try:
                await ws.client.send(other)
            except NotFound:
                break
            await asyncio.sleep(0.2)
    again = await ws.client.send(submit_cmd)
    assert again.replayed and again.seq == first.seq
    assert [type(e).__name__ for e in await history(store, ws.name, run_id)] == ["RunSubmitted"]


async def test_a_workspace_with_unclaimed_tickets_does_not_hold_up_another(
    ws: AsyncWorkspace, agents: Agents, client_conn: Connection
) -> None:
    """The ticket window is per workspace and compute target: a workspace whose queue on
    ``local`` has no agent (its tickets stay unclaimed, a window of one here) does not stop
    another workspace's jobs on its own ``local``."""
    from cairn.proto.commands import CreateWorkspace
    from cairn.rpc import Client

    other = Client(client_conn, "o" + os.urandom(6).hex())
    await other.send(CreateWorkspace(command_id=os.urandom(8).hex(), name=other.workspace))
    await other.send(CreateExperiment(command_id=os.urandom(8).hex(), name="idle"))
    idle = JobSpec(command=["true"])
    for _ in range(2):
        await other.send(
            SubmitJob(
                command_id=os.urandom(8).hex(),
                run_id=os.urandom(8).hex(),
                experiment_name="idle",
                job=idle,
            )
        )
    await agents.start(slots=1)
    run_id = await submit(ws, "jobs", ScriptRunConfig(command=["true"]))
    assert (await follow(ws, run_id, timeout=30))["status"] == "Completed"


async def test_reports_from_a_stale_attempt_are_refused(
    ws: AsyncWorkspace, agent_conn: Connection
) -> None:
    """The fencing itself, with no agent process (the test claims and reports as the agent
    user): claim, lose the lease, claim again; the first attempt can neither report nor
    finish."""
    reporter = Client(agent_conn, ws.name)
    await ws.experiment("jobs")
    run_id = os.urandom(8).hex()
    await ws.client.send(
        SubmitJob(
            command_id=os.urandom(8).hex(),
            run_id=run_id,
            experiment_name="jobs",
            compute="local",
            job=JobSpec(command=["true"]),
        )
    )

    async def claim(agent: str, queue_n: int) -> int:
        reply = await reporter.send_any(
            ClaimJob(command_id=os.urandom(8).hex(), run_id=run_id, queue_n=queue_n, agent_id=agent)
        )
        assert isinstance(reply, QueryResult), reply  # a claim answers with its assignment
        return int(reply.data["attempt"])

    assert await claim("a", 1) == 1
    with pytest.raises(StaleAttempt):  # the same ticket again
        await claim("b", 1)
    await wait_status(ws, run_id, lambda s: s == "Queued")  # lease (2 s) expired: re-queued
    assert await claim("b", 2) == 2

    def points(attempt: int | None) -> LogMetrics:
        point = MetricPoint("who", "scalar", attempt or 0, 0, 0.0)
        return LogMetrics(
            command_id=os.urandom(8).hex(), run_id=run_id, points=[point], attempt=attempt
        )

    for stale in (
        ReportJob(command_id=os.urandom(8).hex(), run_id=run_id, attempt=1),
        FinishJob(command_id=os.urandom(8).hex(), run_id=run_id, attempt=1, outcome="completed"),
        points(1),  # the replaced attempt's metrics too
    ):
        with pytest.raises(StaleAttempt):
            await reporter.send_any(stale)
    with pytest.raises(InvalidInput, match="no attempt 3"):
        await ws.client.send(points(3))
    ws.saw(await ws.client.send(points(2)), metrics=True)  # read it back: read-your-writes
    await reporter.send(
        FinishJob(command_id=os.urandom(8).hex(), run_id=run_id, attempt=2, outcome="completed")
    )
    assert (await follow(ws, run_id, timeout=10))["status"] == "Completed"
    assert (await ws.run(run_id).get_metrics())["who"] == 2  # attempt 2's point alone


def _wheel(folder: Path, name: str = "tinypkg", value: str = "from-wheel") -> Path:
    """A pure-Python wheel built by hand: installing it needs no index."""
    import base64
    import hashlib
    import zipfile

    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n",
        f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{name}-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{name}-0.1.dist-info/RECORD,,")
    files[f"{name}-0.1.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


async def test_an_environment_with_packages_gets_one_cached_virtualenv(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """Two jobs of one environment at once: the virtualenv is built once (uv), has the
    environment's package, and still sees the agent's Cairn SDK."""
    from cairn.sdk import Environment

    wheel = _wheel(tmp_path)
    src = source(
        tmp_path,
        """
        import sys, tinypkg
        from cairn.sdk import Run
        print(tinypkg.VALUE, sys.prefix != sys.base_prefix, Run.__name__)
    """,
    )
    env = Environment("tiny-env")
    env.python.conda_dependencies.pip_packages = [str(wheel)]
    await agents.start(slots=2)
    config = ScriptRunConfig(source_directory=src, script="job.py", environment=env)
    run_ids = [await submit(ws, "jobs", config) for _ in range(2)]
    outputs = []
    for run_id in run_ids:
        printed: list[str] = []
        details = await follow(ws, run_id, out=printed.append, timeout=120)
        assert details["status"] == "Completed", "".join(printed)
        assert "from-wheel True Run" in "".join(printed)
        outputs.append("".join(printed))
    # the build's phases came first in the output of the job that built it (an inline
    # environment: named by its spec's hash); the other job said it waited for that build
    built_by = [o for o in outputs if re.match(r"\[cairn\] building environment \w{12} ", o)]
    assert len(built_by) == 1, outputs
    phases = re.findall(r"^\[cairn\] (.*)$", built_by[0], re.M)
    label = phases[0].split()[2]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert phases[:3] == [
        f"building environment {label} (1 package)",
        f"creating a virtualenv (python {python})",
        "installing 1 package with uv",
    ]
    assert "+ tinypkg==0.1" in " ".join(phases)
    assert re.fullmatch(rf"environment {label} ready in [\d.]+ s", phases[-1]), phases
    other = next(o for o in outputs if o is not built_by[0])
    assert re.findall(r"^\[cairn\] (.*)$", other, re.M) in (
        [f"waiting for another job's build of environment {label}"],
        [],  # claimed after the build was done
    )
    assert built_by[0].index(phases[-1]) < built_by[0].index("from-wheel True Run")
    envs = tmp_path / "agent-state" / "agent" / "envs"
    built = [p for p in envs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(built) == 1 and (built[0] / ".ready").exists()
    bad = Environment("broken-env")
    bad.python.conda_dependencies.pip_packages = [str(tmp_path / "missing-0.1-py3-none-any.whl")]
    config = ScriptRunConfig(source_directory=src, script="job.py", environment=bad)
    printed = []
    details = await follow(ws, await submit(ws, "jobs", config), out=printed.append, timeout=120)
    assert details["status"] == "Failed" and "building environment" in details["error"]
    assert re.search(r"^\[cairn\] building environment \w{12} failed$", "".join(printed), re.M)


@pytest.mark.timeout(1200)  # a first run installs docker.io and debootstraps the base image
async def test_docker_backend_runs_a_job_in_a_locally_built_image(
    docker_engine: None, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """In the local base image: logs, outputs and metrics come back; an environment with a
    package gets an image built from its spec (the wheel copied into the build)."""
    from cairn.sdk import Environment

    src = source(
        tmp_path,
        """
        import os, platform, sys
        from cairn.sdk import Run
        run = Run.get_context()
        run.log("in_container", 1)
        print("python", platform.python_version(), "in", os.getcwd(), flush=True)
        try:
            import tinypkg
            print("package", tinypkg.VALUE)
        except ImportError:
            print("no package")
        os.makedirs("outputs", exist_ok=True)
        open("outputs/where.txt", "w").write(open("/etc/os-release").read())
    """,
    )
    import docker

    from cairn.services.agent._backends import STACK_LABEL, stack_of

    engine = docker.from_env()
    # a job of a dead agent of this stack, and one of a stack this agent knows nothing of
    # (another Cairn on the same engine): only the first is this agent's to remove
    mine = {"cairn.agent": "gone-agent", "cairn.run": "r-orphan"}
    mine[STACK_LABEL] = stack_of(agents.settings)
    theirs = {"cairn.agent": "other-agent", "cairn.run": "r-other", STACK_LABEL: "nats://x:1"}
    orphan, other = (
        engine.containers.run(
            "cairn-base:bookworm", ["sleep", "600"], detach=True, network_mode="none", labels=each
        )
        for each in (mine, theirs)
    )
    try:
        await agents.start(backend="docker", slots=2)
        left = {c.id for c in engine.containers.list(all=True)}
        assert orphan.id not in left, "orphan kept"
        assert other.id in left, "another stack's job removed"
    finally:
        other.remove(force=True)
    plain = await submit(ws, "docker", ScriptRunConfig(source_directory=src, script="job.py"))
    env = Environment("docker-tiny")
    env.python.conda_dependencies.pip_packages = [str(_wheel(tmp_path, value="in-image"))]
    config = ScriptRunConfig(source_directory=src, script="job.py", environment=env)
    built = await submit(ws, "docker", config)
    for run_id, package in ((plain, "no package"), (built, "package in-image")):
        printed: list[str] = []
        details = await follow(ws, run_id, out=printed.append, timeout=300)
        output = "".join(printed)
        assert details["status"] == "Completed", output
        assert "in /workspace" in output and package in output
        target = await ws.run(run_id).download_file("outputs/where.txt", tmp_path / "w.txt")
        assert "bookworm" in target.read_text()
        assert (await ws.run(run_id).get_metrics("in_container"))["in_container"] == 1


async def test_a_hostile_snapshot_fails_the_run_and_writes_nothing(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """A snapshot archive uploaded by hand with a member that climbs out: the agent refuses
    it before extracting anything, and the run fails saying why."""
    import io
    import tarfile

    from cairn.data import upload_file
    from cairn.proto.jobs import SNAPSHOT_FILE
    from cairn.snapshot import digest_of

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name in ("job.py", "../../escaped.py"):
            info = tarfile.TarInfo(name)
            data = b"print('hi')\n"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / SNAPSHOT_FILE
    archive.write_bytes(raw.getvalue())
    digest, area = digest_of(raw.getvalue()), "snap-hostile"
    await upload_file(ws.client, area, SNAPSHOT_FILE, archive, staging=True)
    await ws.experiment("jobs")
    run_id = os.urandom(8).hex()
    await ws.client.send(
        SubmitJob(
            command_id=os.urandom(8).hex(),
            run_id=run_id,
            experiment_name="jobs",
            job=JobSpec(command=["python", "job.py"], snapshot=digest, snapshot_area=area),
        )
    )
    await agents.start()
    details = await follow(ws, run_id, timeout=60)
    assert details["status"] == "Failed" and "leaves the target folder" in details["error"]
    work = tmp_path / "agent-state" / "agent" / "work"
    assert not list(work.rglob("*.py")) and not list(tmp_path.rglob("escaped.py"))  # noqa: ASYNC240
