"""A job whose process could not be started: a cause that may pass (a warm interpreter that
does not answer, the agent's side of the job refused by the system) is the agent's, retried
within the run's attempt budget and named; a cause of the job's own fails its run at once."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest

from cairn.bus import EventStore
from cairn.errors import CairnError, Unavailable
from cairn.proto.events import RunCompleted, RunFailed, RunRequeued
from cairn.sdk import AsyncWorkspace, ScriptRunConfig
from cairn.sdk._jobs import follow, submit
from cairn.services.agent import _backends
from cairn.services.agent._backends import DockerBackend, ProcessBackend, Runtime
from cairn.services.agent._launch import PASSING_ERRNOS, launch_passing
from cairn.services.agent._warm import Zygote
from tests.conftest import Agents
from tests.services.test_jobs import history

#: a job that records each run of itself (appending, so a second run shows) and its parent
MARK = """
    import os, sys
    marks = sys.argv[1]
    run = os.environ["CAIRN_RUN_ID"]
    parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\\0", b" ")
    open(os.path.join(marks, run + ".parent"), "wb").write(parent)
    open(os.path.join(marks, run + ".pid"), "w").write(str(os.getppid()))
    open(os.path.join(marks, run), "a").write("x")
"""


def _job(tmp_path: Path) -> tuple[ScriptRunConfig, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(textwrap.dedent(MARK))
    marks = tmp_path / "marks"  # beside the agent's state: the job may write in it
    marks.mkdir()
    config = ScriptRunConfig(source_directory=src, script="job.py", arguments=[str(marks)])
    return config, marks


async def _run(ws: AsyncWorkspace, config: ScriptRunConfig) -> str:
    run_id = await submit(ws, "jobs", config)
    details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Completed", details
    return run_id


async def test_a_warm_interpreter_that_does_not_answer_starts_the_job_cold_once(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    """The zygote stopped (SIGSTOP: as starved as a process can be): a job's warm start is
    given up after ``job_warm_answer_s`` and the job starts cold, completing on its first
    attempt; once the zygote runs again it forks the request it was sent, and that child
    runs nothing of the job (it finds its go pipe closed)."""
    agents.settings = msgspec.structs.replace(agents.settings, job_warm_answer_s=1.0)
    config, marks = _job(tmp_path)
    await agents.start(slots=1)
    first = await _run(ws, config)
    assert "_zygote.py" in (marks / f"{first}.parent").read_text(), "the premise: a warm start"
    zygote = int((marks / f"{first}.pid").read_text())
    os.kill(zygote, signal.SIGSTOP)
    try:
        unanswered = await _run(ws, config)
        assert "_zygote.py" not in (marks / f"{unanswered}.parent").read_text()
        events = await history(store, ws.name, unanswered)
        assert not [e for e in events if isinstance(e, RunRequeued)]
        assert isinstance(events[-1], RunCompleted) and events[-1].attempt == 1
    finally:
        os.kill(zygote, signal.SIGCONT)
    # the zygote answers requests in order: a job it runs again comes after the one it was
    # sent while stopped (until it answers, jobs start cold)
    for _ in range(20):
        again = await _run(ws, config)
        if "_zygote.py" in (marks / f"{again}.parent").read_text():
            break
    else:
        raise AssertionError("the zygote never ran a job again once it could")
    assert int((marks / f"{again}.pid").read_text()) == zygote
    runs = sorted(p.name for p in marks.iterdir() if "." not in p.name)
    assert all((marks / run).read_text() == "x" for run in runs), "a job ran twice"
    assert unanswered in runs


def _gates(agent_id: str) -> Path:
    """The folder of an agent's job sockets (``AgentService.gates``)."""
    return Path(tempfile.gettempdir()) / f"cairn-gates-{agent_id}"


@contextmanager
def _gates_blocked(agent_id: str) -> Iterator[None]:
    """The agent's folder of job sockets replaced by a file: opening a job's socket fails
    (ENOTDIR, whoever the agent runs as) until it is a folder again."""
    gates = _gates(agent_id)
    shutil.rmtree(gates)
    gates.write_text("")
    try:
        yield
    finally:
        gates.unlink()
        gates.mkdir(mode=0o700)


async def _requeued(store: EventStore, ws: str, run_id: str) -> RunRequeued:
    async with asyncio.timeout(60):
        while True:
            found = [e for e in await history(store, ws, run_id) if isinstance(e, RunRequeued)]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


async def test_a_job_the_agent_could_not_start_is_requeued_and_completes_once(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    config, marks = _job(tmp_path)
    agent_id = f"local-launch{os.getpid()}"
    await agents.start(slots=1, agent_id=agent_id)
    with _gates_blocked(agent_id):
        run_id = await submit(ws, "jobs", config)
        requeued = await _requeued(store, ws.name, run_id)
    assert requeued.attempt == 1
    assert f"agent {agent_id} could not start the job: cannot start" in requeued.reason
    details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Completed", details
    events = await history(store, ws.name, run_id)
    # the first re-queue has no delay: attempt 2 may come back while the folder is still
    # blocked, and be lost too; whichever attempt completes, the job ran once
    completed = [e.attempt for e in events if isinstance(e, RunCompleted)]
    assert len(completed) == 1 and completed[0] >= 2
    assert not [e for e in events if isinstance(e, RunFailed)]
    assert (marks / run_id).read_text() == "x"


async def test_a_launch_that_keeps_failing_ends_failed_with_its_last_cause(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path
) -> None:
    config, marks = _job(tmp_path)
    agent_id = f"local-launch{os.getpid()}"
    await agents.start(slots=1, agent_id=agent_id)
    with _gates_blocked(agent_id):
        run_id = await submit(ws, "jobs", config)
        details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Failed", details
    assert "gave up after 3 lost attempts; the last: " in details["error"]
    assert f"agent {agent_id} could not start the job: cannot start" in details["error"]
    events = await history(store, ws.name, run_id)
    assert [e.attempt for e in events if isinstance(e, RunRequeued)] == [1, 2]
    assert all("could not start the job" in e.reason for e in events if isinstance(e, RunRequeued))
    assert not (marks / run_id).exists()


async def test_a_job_whose_process_the_system_could_not_fork_now_is_requeued(
    ws: AsyncWorkspace,
    agents: Agents,
    store: EventStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The launch itself fails (not the agent's ways out before it) with an errno of the
    table: the attempt is lost through the classification, and the next one runs the job."""
    agents.settings = msgspec.structs.replace(
        agents.settings, job_warm_start=False, job_confine_files=False
    )
    config, marks = _job(tmp_path)
    real = _backends.subprocess.Popen
    refused: list[list[str]] = []

    def short(argv: list[str], *args: object, **kwargs: object) -> object:
        if not refused and any(str(a).endswith("job.py") for a in argv):  # its first launch
            refused.append(argv)
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(argv, *args, **kwargs)

    await agents.start(slots=1)
    monkeypatch.setattr(_backends.subprocess, "Popen", short)
    run_id = await submit(ws, "jobs", config)
    requeued = await _requeued(store, ws.name, run_id)
    assert "could not be started now" in requeued.reason
    assert "Resource temporarily unavailable" in requeued.reason
    details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Completed", details
    assert (marks / run_id).read_text() == "x"
    assert len(refused) == 1


@pytest.mark.parametrize("where", ["argument", "variable"])
async def test_a_command_the_system_refuses_fails_its_run_at_once_with_the_cause(
    ws: AsyncWorkspace, agents: Agents, store: EventStore, tmp_path: Path, where: str
) -> None:
    """An argument or an environment variable's value with a NUL byte cannot be given to a
    program: the job's own fault, not retried."""
    agents.settings = msgspec.structs.replace(
        agents.settings, job_warm_start=False, job_confine_files=False
    )
    config, marks = _job(tmp_path)
    bad = where == "argument"
    config = ScriptRunConfig(
        source_directory=config.source_directory,
        script="job.py",
        arguments=[f"{marks}\0" if bad else str(marks)],
        environment_variables={} if bad else {"BAD": "a\0b"},
    )
    await agents.start(slots=1)
    run_id = await submit(ws, "jobs", config)
    details = await follow(ws, run_id, timeout=90)
    assert details["status"] == "Failed", details
    said = "null byte" if bad else "environment variable 'BAD'"
    assert "cannot start" in details["error"] and said in details["error"]
    events = await history(store, ws.name, run_id)
    assert not [e for e in events if isinstance(e, RunRequeued)]
    assert isinstance(events[-1], RunFailed) and events[-1].attempt == 1
    assert events[-1].exit_code == 127
    assert not (marks / run_id).exists()


# -- the classification of launch failures, and what a failed launch leaves behind --------


def test_each_errno_of_the_table_may_pass_and_the_jobs_own_do_not() -> None:
    for code in PASSING_ERRNOS:
        assert launch_passing(OSError(code, os.strerror(code))), errno.errorcode[code]
    for code in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.E2BIG, errno.EISDIR):
        assert not launch_passing(OSError(code, os.strerror(code))), errno.errorcode[code]
    assert launch_passing(Unavailable("the engine away"))
    assert launch_passing(TimeoutError())
    assert launch_passing(ConnectionResetError())
    assert not launch_passing(ValueError("embedded null byte"))
    assert not launch_passing(CairnError("not re-queued"))


def _api_error(status: int, message: str) -> Exception:
    """A ``docker.errors.APIError`` as docker-py makes it from the engine's HTTP answer."""
    import docker.errors
    import requests

    response = requests.Response()
    response.status_code = status
    response.reason = "error"
    response.url = "http+docker://localhost/v1.43/containers/c0/start"
    response._content = json.dumps({"message": message}).encode()
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        try:
            docker.errors.create_api_error_from_http_exception(exc)
        except docker.errors.APIError as made:
            return made
    raise AssertionError("not an error status")


class _Container:
    def __init__(self, engine: _Engine, labels: dict[str, str]) -> None:
        self.engine, self.labels = engine, labels

    def remove(self, force: bool = False) -> None:
        assert force
        if self.engine.removal_fails:
            raise _api_error(500, "the engine is busy")
        self.engine.containers.remove(self)


class _Engine:
    """An engine whose start fails with ``error`` after the container was made (a start
    that outlived its caller, or a created container left by a start that failed)."""

    def __init__(self, error: Exception, removal_fails: bool = False) -> None:
        self.error, self.removal_fails = error, removal_fails
        self.containers: list[_Container] = []

    def run(self, image: str, argv: list[str], labels: dict[str, str], **_: object) -> None:
        self.containers.append(_Container(self, labels))
        raise self.error

    def list(self, all: bool, filters: dict[str, list[str]]) -> list[_Container]:
        assert all
        wanted = dict(w.split("=", 1) for w in filters["label"])
        return [c for c in self.containers if wanted.items() <= c.labels.items()]


def _docker(engine: _Engine) -> DockerBackend:
    backend = DockerBackend.__new__(DockerBackend)  # no engine here: the client is the fake's
    backend.client = types.SimpleNamespace(containers=engine)
    return backend


LABELS = {"cairn.run": "r1", "cairn.attempt": "2", "cairn.agent": "a1"}


async def test_a_docker_start_that_timed_out_leaves_no_container_and_may_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests

    monkeypatch.setattr(_backends, "_REMOVE_DELAYS_S", (0.0, 0.0))
    for error in (requests.exceptions.ReadTimeout("read timed out"), _api_error(500, "boom")):
        engine = _Engine(error)
        other = _Container(engine, {**LABELS, "cairn.attempt": "1"})  # not this attempt's
        engine.containers.append(other)
        with pytest.raises(Unavailable) as raised:
            await _docker(engine)._run_container("img", ["python", "job.py"], LABELS)
        assert launch_passing(raised.value)
        assert engine.containers == [other]


async def test_a_docker_start_whose_container_cannot_be_removed_is_not_requeued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests

    monkeypatch.setattr(_backends, "_REMOVE_DELAYS_S", (0.0, 0.0))
    engine = _Engine(requests.exceptions.ReadTimeout("read timed out"), removal_fails=True)
    with pytest.raises(CairnError) as raised:
        await _docker(engine)._run_container("img", ["python", "job.py"], LABELS)
    assert not launch_passing(raised.value)
    assert "could not be removed" in str(raised.value)


class _SlowEngine(_Engine):
    """An engine whose ``run`` starts the container only once released."""

    def __init__(self) -> None:
        super().__init__(RuntimeError("unused"))
        self.began, self.release = threading.Event(), threading.Event()
        self.other = _Container(self, {**LABELS, "cairn.attempt": "1"})  # not this attempt's
        self.containers.append(self.other)

    def run(self, image: str, argv: list[str], labels: dict[str, str], **_: object) -> None:
        self.began.set()
        self.release.wait(10)
        self.containers.append(_Container(self, labels))


async def _give_up_launch(engine: _SlowEngine) -> None:
    launch = asyncio.ensure_future(_docker(engine)._run_container("img", ["true"], LABELS))
    async with asyncio.timeout(10):
        while not engine.began.is_set():
            await asyncio.sleep(0.01)
    launch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await launch


async def test_a_docker_launch_cancelled_while_the_engine_starts_it_leaves_no_container() -> None:
    """The agent gave the launch up (its attempt cancelled) while the engine's call was on its
    way: the call goes on in its thread and starts the container, which nobody follows; it is
    removed once the call returns."""
    engine = _SlowEngine()
    await _give_up_launch(engine)
    engine.release.set()  # the engine's call returns: the container it started is there now
    async with asyncio.timeout(5):
        while engine.containers != [engine.other]:
            await asyncio.sleep(0.01)


def test_a_docker_launch_given_up_as_the_agent_stops_leaves_no_container() -> None:
    """The same while the agent stops: its loop ends (every task cancelled) before the
    engine's call returns; the container is removed all the same."""
    engine = _SlowEngine()
    threading.Timer(0.3, engine.release.set).start()  # after the loop has begun to end
    asyncio.run(_give_up_launch(engine))  # waits for the engine call's thread as it ends
    assert engine.containers == [engine.other]


async def test_a_docker_refusal_is_the_jobs_own() -> None:
    import docker.errors

    engine = _Engine(_api_error(404, "No such image: img"))
    with pytest.raises(docker.errors.APIError) as raised:
        await _docker(engine)._run_container("img", ["python", "job.py"], LABELS)
    assert raised.value.is_client_error()
    assert not launch_passing(raised.value)
    assert engine.containers == []  # a container created before the refusal is removed


async def _python_for(_: object) -> Path:
    return Path(sys.executable)


async def test_a_process_start_short_of_something_is_unavailable_and_a_missing_folder_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ProcessBackend(_python_for, warm=False)
    try:
        with pytest.raises(FileNotFoundError):  # the job's own: raised as it is
            await backend.launch(
                Runtime(sys.executable), [sys.executable, "-c", "0"], tmp_path / "no", {}, {}, []
            )

        def short(*_: object, **__: object) -> None:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

        monkeypatch.setattr(_backends.subprocess, "Popen", short)
        with pytest.raises(Unavailable) as raised:
            await backend.launch(
                Runtime(sys.executable), [sys.executable, "-c", "0"], tmp_path, {}, {}, []
            )
        assert isinstance(raised.value.__cause__, OSError)
        assert raised.value.__cause__.errno == errno.EAGAIN
    finally:
        backend.close()


async def test_a_started_process_whose_launch_fails_is_killed_and_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    script = f"import time; time.sleep(1); open({str(marker)!r}, 'w').write('x')"
    pids: list[int] = []

    def no_fd(_: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_backends.os, "dup", no_fd)
    with pytest.raises(OSError, match="Too many open files"):
        await _backends._spawn([sys.executable, "-c", script], tmp_path, {}, None, pids.append)
    monkeypatch.undo()
    assert len(pids) == 1
    with pytest.raises(ProcessLookupError):  # killed and reaped: no process of that pid
        os.kill(pids[0], 0)
    assert not marker.exists()


async def test_a_warm_child_whose_output_cannot_be_joined_never_runs_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zygote forked the child, then the agent failed to take it (its output pipe could
    not be joined to the loop): the launch fails as a cause that may pass, and the child left
    without running anything of the job, so a re-queue does not run it twice."""
    src = tmp_path / "src"
    src.mkdir()
    marker = tmp_path / "ran"
    (src / "job.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n")
    backend = ProcessBackend(_python_for, warm=True)
    env = {"PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "job.py"]
    try:
        launched = await backend.launch(Runtime(sys.executable), argv, src, env, {}, [])
        assert await launched.wait == 0 and marker.read_text() == "x"  # warm, and it runs
        marker.unlink()
        loop = asyncio.get_running_loop()

        async def no_room(*_: object) -> None:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")

        monkeypatch.setattr(loop, "connect_read_pipe", no_room)
        with pytest.raises(Unavailable):
            await backend.launch(Runtime(sys.executable), argv, src, env, {}, [])
        monkeypatch.undo()
        assert not marker.exists()
        launched = await backend.launch(Runtime(sys.executable), argv, src, env, {}, [])
        assert await launched.wait == 0 and marker.read_text() == "x"
    finally:
        backend.close()


async def test_a_zygote_that_cannot_make_the_go_pipe_leaks_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text("pass\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    zygote = Zygote(sys.executable, env, lambda argv: argv)
    try:
        _, output, exited, go = await zygote.launch(["job.py"], src, env)
        os.write(go, b"1")
        os.close(go)
        os.close(output)
        assert await exited == 0
        before = sorted(os.listdir("/proc/self/fd"))
        made = 0
        real = os.pipe

        def second_fails() -> tuple[int, int]:
            nonlocal made
            made += 1
            if made == 2:
                raise OSError(errno.EMFILE, "Too many open files")
            return real()

        monkeypatch.setattr(os, "pipe", second_fails)
        with pytest.raises(OSError, match="Too many open files"):
            await zygote.launch(["job.py"], src, env)
        monkeypatch.undo()
        assert sorted(os.listdir("/proc/self/fd")) == before
        assert not zygote._pids
    finally:
        zygote.close()


def test_a_jobs_output_pipe_is_closed_once_under_uvloop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvloop's pipe transport closes the descriptor, then the file object it was given
    (uvloop issue 763): a second close of a number another thread may hold by then, which
    failed launches with ``EBADF``. The agent's loop is uvloop's: the job's output pipe is
    closed there exactly once, at its end of file. A probe file object re-occupies the number
    as soon as it closes it, so a later close by the transport shows either way round."""
    import gc
    import io

    import uvloop

    given: list[int] = []
    doubled: list[int] = []
    held: list[int] = []

    class Probe(io.FileIO):
        def close(self) -> None:
            if not self.closefd or self.closed:
                super().close()
                return
            fd = self.fileno()
            try:
                os.fstat(fd)
            except OSError:  # the transport closed it first: this close is the second
                doubled.append(fd)
                return
            super().close()
            sentinel = os.open(os.devnull, os.O_RDONLY)
            os.dup2(sentinel, fd)  # the number taken again, as another thread might
            os.close(sentinel)
            held.append(fd)

    def fdopen(fd: int, mode: str, buffering: int = -1, closefd: bool = True) -> Probe:
        given.append(fd)
        return Probe(fd, "rb", closefd=closefd)

    monkeypatch.setattr(_backends.os, "fdopen", fdopen)

    async def job() -> tuple[bytes, int]:
        argv = [sys.executable, "-c", "print('out')"]
        launched = await _backends._spawn(argv, tmp_path, dict(os.environ))
        out = await launched.output.read()
        code = await launched.wait
        for _ in range(3):  # the transport's close runs in the loop's next iterations
            await asyncio.sleep(0)
        return out, code

    out, code = uvloop.run(job())
    gc.collect()
    monkeypatch.undo()
    try:
        assert (out, code) == (b"out\n", 0)
        assert len(given) == 1 and not doubled
        for fd in held:  # re-occupied after the probe closed it: nobody closed it again
            os.fstat(fd)
        if not held:  # the transport owned it: closed, once
            with pytest.raises(OSError) as closed:
                os.fstat(given[0])
            assert closed.value.errno == errno.EBADF
    finally:
        for fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)
