"""Where a job's process runs: a local process group, or a Docker container.

Both give the attempt the same handle: the output as one ``StreamReader`` (stdout and stderr
merged, in order), the exit code, and ``terminate``/``kill`` for a cancel.

Docker: the image is the environment's ``docker_image`` (default ``cairn-base:bookworm``, a
Debian image built locally, see ``ops/README.md``), or, when the environment installs
packages, an image built from it with the docker SDK (``cairn-env:<spec hash>``, built once;
local wheel files named in the spec are copied into the build). Containers run with the host
network (the job's SDK reaches NATS like the agent does), the job's folder mounted at
``/workspace``, the agent's own Python packages mounted read-only and added *after* the
image's (so the SDK's ``Run`` imports in a job and the image's pins win), as the agent's
uid, labelled with run and attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from cairn.errors import CairnError, InvalidInput, Unavailable
from cairn.log import get_logger
from cairn.proto.jobs import JobEnvironment
from cairn.services.agent import _landlock
from cairn.services.agent._launch import launch_passing
from cairn.services.agent._phases import phase
from cairn.services.agent._warm import Confinement, Zygote, warm_argv
from cairn.settings import Settings
from cairn.snapshot import SnapshotRefused, unpack

__all__ = [
    "BASE_IMAGE",
    "Backend",
    "DockerBackend",
    "Launched",
    "ProcessBackend",
    "Runtime",
    "docker_client",
    "job_environ",
]

log = get_logger("cairn.agent")
#: the label naming the stack (its NATS servers) a job container's agent belongs to
STACK_LABEL = "cairn.stack"


def stack_of(settings: Settings) -> str:
    """The stack an agent belongs to, as its job containers are labelled: the NATS servers it
    connects to (in a fixed order)."""
    return ",".join(sorted(u.strip() for u in settings.nats_url.split(",") if u.strip()))


BASE_IMAGE = "cairn-base:bookworm"
_PR_SET_PDEATHSIG = 1
_SKIP_ENV = ("PATH", "HOME", "PYTHONPATH", "VIRTUAL_ENV")
#: what a job's process keeps of its agent's environment (anything else — cloud keys, tokens,
#: Cairn's own settings — stays with the agent): names, and prefixes ending in ``*``;
#: ``job_env_allow`` adds more
JOB_ENV_ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONWARNINGS",
    "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_*",
    "NVIDIA_*",
    "NCCL_*",
)
_GATE_MOUNT = "/run/cairn"
_SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None
_KEEPER = str(Path(__file__).with_name("_keeper.py"))
#: environments an agent keeps a warm interpreter for
MAX_ZYGOTES = 8


class Runtime:
    """What a job of one environment runs with: the interpreter ``python`` stands for, and
    the image (Docker only)."""

    def __init__(self, python: str, image: str | None = None) -> None:
        self.python, self.image = python, image


class Launched:
    """A started job: its output, its exit, and how to stop it."""

    def __init__(
        self,
        output: asyncio.StreamReader,
        wait: Awaitable[int],
        terminate: Callable[[], None],
        kill: Callable[[], None],
        cleanup: Callable[[], None] | None = None,
        session: int | None = None,
        pid: int | None = None,
    ) -> None:
        self.output, self.wait, self.terminate, self.kill = output, wait, terminate, kill
        self.cleanup = cleanup  # blocking (a container to remove): run in a thread
        #: the session the job's processes are in (a process job leads its own); None for a
        #: container, whose processes reach only their own socket anyway
        self.session = session
        #: the launched process, as this agent's pid namespace numbers it (a container's
        #: first process); None when not known
        self.pid = pid


class Backend(Protocol):
    name: str

    async def runtime(self, env: JobEnvironment | None) -> Runtime: ...

    async def launch(
        self,
        runtime: Runtime,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        labels: dict[str, str],
        gpus: list[int],
    ) -> Launched:
        """Start the job's process. ``Unavailable`` when it could not be started for a
        cause that may pass (``_launch.launch_passing``: the machine or the engine short of
        something now); any other error is the job's own (its command). Whatever it raises,
        no process of the job is left running (the run may be re-queued and run elsewhere)."""
        ...

    async def unpack(self, archive: Path, target: Path) -> None:
        """Extract a job's snapshot as folder ``target`` (``cairn.snapshot.unpack``'s checks:
        ``SnapshotRefused`` for a hostile archive, nothing left behind)."""

    def close(self) -> None:
        """Release what the backend holds (warm interpreters, the engine's connection): called
        once the agent's jobs have ended."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the job's process gets SIGKILL when the agent dies (kill -9 included)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Keeper:
    """The agent's end of ``_keeper.py``: a process, started with the first job, told each
    job's process group; when the agent dies it kills them all."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None

    def watch(self, pgid: int) -> None:
        """Tell the keeper about group ``pgid``; never raises (the job is running already:
        a keeper that cannot be started or told is logged, and the group then dies with the
        agent through its parent-death signal alone)."""
        for _ in range(2):
            try:
                if self._fd is None:
                    self._start()
                assert self._fd is not None
                os.write(self._fd, f"+{pgid}\n".encode())
                return
            except OSError as exc:  # it died: a new one takes over from the next job on
                log.warning("job_keeper_lost", error=repr(exc))
                self.close()
        log.warning("job_keeper_unavailable", pgid=pgid)

    def _start(self) -> None:
        read, write = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _KEEPER],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        self._fd = write

    def close(self) -> None:
        """End of file: the keeper kills the groups that are left (none, once the jobs have
        ended) and exits."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ProcessBackend:
    """The job runs as a process group of its own, so a cancel reaches its whole tree, and dies
    with the agent, kill -9 included: its own process through the parent-death signal, the
    processes it started through the keeper (``_keeper.py``), which kills the group.

    ``python <script>`` jobs are forked from a warm interpreter when they can be (``_warm``),
    unless ``warm`` is off. A job kept out of the agent's files (``protect``, Landlock) that
    starts cold is launched by that interpreter too: it forks, confines itself with the walls
    it holds open, and executes the command, so the agent itself never forks. A zygote that
    cannot be asked, or does not answer within ``warm_answer_s`` (a machine under load), is
    passed by: the job starts cold here, and so do the next ones until it answers again.

    ``launch`` raises ``Unavailable`` when the process could not be started for a cause that
    may pass (:func:`launch_passing`: the machine short of processes, memory or descriptors
    now); any other error is the job's own (a command that is not there, or not executable)."""

    name = "process"

    def __init__(
        self,
        python_for: Callable[[JobEnvironment | None], Awaitable[Path]],
        *,
        warm: bool = True,
        warm_answer_s: float = 30.0,
        env_allow: str = "",
        protect: list[Path] | None = None,
    ) -> None:
        self._python_for = python_for
        self.warm = warm
        #: how long a launch waits for a zygote's answer before it starts the job cold
        self.warm_answer_s = warm_answer_s
        #: the folders a job must not reach (the agent's home, state, artifacts, keys), kept
        #: from it with Landlock (``_landlock.py``); None: not confined
        self.protect = [str(p) for p in protect] if protect is not None else None
        #: the agent's own installation (its virtualenv, its base interpreter's prefix):
        #: protected too, but readable, so a job can read it and change nothing in it
        self.installation = _installation()
        if self.protect is not None:
            self.protect += [p for p in self.installation if p not in self.protect]
        if protect is not None:
            _room_for_walls()
        #: the walls' rules and when they were made (``_landlock.walls``: a walk of the
        #: folders on the way to the protected ones, reused for a few seconds)
        self._walls: tuple[float, list[tuple[str, int]]] = (-_WALLS_FOR_S, [])
        self._walls_fds: tuple[float, dict[str, int]] = (-_WALLS_FOR_S, {})
        self._zygotes: dict[str, Zygote] = {}
        # what jobs keep of the agent's environment as it started (read once: going through
        # os.environ costs more than the rest of a launch's set-up)
        self._environ = job_environ(os.environ, env_allow)
        self._base: dict[str, dict[str, str]] = {}
        self._keeper = _Keeper()

    async def runtime(self, env: JobEnvironment | None) -> Runtime:
        return Runtime(str(await self._python_for(env)))

    async def unpack(self, archive: Path, target: Path) -> None:
        await asyncio.to_thread(unpack, archive, target)

    async def launch(
        self,
        runtime: Runtime,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        labels: dict[str, str],
        gpus: list[int],
    ) -> Launched:
        env = {**self._base_env(runtime.python), **env}
        # where the job's own ``pip install`` puts packages: its folder, not its environment
        # (shared with other jobs) nor the agent's installation (``_env``'s pip and .pth)
        env["CAIRN_JOB_SITE"] = str(cwd.parent / "packages")
        try:
            return await self._launch(runtime, argv, cwd, env)
        except OSError as exc:
            if launch_passing(exc):  # the machine short of something now: not the job's
                raise Unavailable(f"the job's process could not be started now: {exc}") from exc
            raise

    async def _launch(
        self, runtime: Runtime, argv: list[str], cwd: Path, env: dict[str, str]
    ) -> Launched:
        confine = await self._confinement(runtime, cwd, env)
        warm = warm_argv(runtime.python, argv) if self.warm else None
        zygote = self._zygote(runtime.python) if warm is not None or confine is not None else None
        if warm is not None and zygote is not None and zygote.fits(env):
            started = await self._from_zygote(zygote, warm, cwd, env, confine)
            if started is not None:
                return started
        if confine is not None and zygote is not None:
            # confined: launched by a zygote, which holds the walls
            started = await self._from_zygote(zygote, argv, cwd, env, confine, execute=True)
            if started is not None:
                return started
        # dies with the agent (kill -9 included): through setpriv when it is there, which
        # keeps the spawn a cheap vfork; else a preexec hook, which forces a full fork (as
        # confinement does: the child restricts itself before it executes the job)
        dies = _SETPRIV is None and sys.platform == "linux"
        rules = confine.rules if confine is not None else None
        opened = self._walls_opened(confine) if confine is not None else None
        preexec = _before_exec(dies, rules, opened) if dies or rules is not None else None
        return await _spawn(_with_pdeathsig(argv), cwd, env, preexec, self._keeper.watch)

    async def _from_zygote(
        self,
        zygote: Zygote,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        confine: Confinement | None,
        *,
        execute: bool = False,
    ) -> Launched | None:
        """The job forked by ``zygote``; None when it could not be (the caller starts it
        cold): the zygote could not be asked, or did not answer within its ``answer_s`` (a
        child it forks late never runs the job, see ``Zygote.launch``), or has not answered
        since it last failed to (no wait then: a stopped or starved interpreter would make
        every job wait for it)."""
        if not zygote.answering:
            return None
        try:
            launched = await zygote.launch(argv, cwd, env, confine, execute=execute)
        except OSError as exc:  # not forked
            log.warning("warm_start_failed", python=zygote.python, error=repr(exc))
            return None
        except TimeoutError:
            log.warning("warm_start_unanswered", python=zygote.python, answer_s=zygote.answer_s)
            return None
        pid, output, exited, go = launched
        try:
            self._keeper.watch(pid)
        except BaseException:
            os.close(output)
            os.close(go)  # unwritten: the child leaves without running anything of the job
            raise
        # the go byte only once the output is joined: a child given up never runs the job
        return await _attach(pid, output, exited, go)

    def _walls_opened(self, confine: Confinement) -> dict[str, int]:
        """The walls' paths opened once per version in the agent: a cold start's child
        inherits them (its fds are closed after the hook, before the job executes)."""
        made, opened = self._walls_fds
        if made != confine.walls_id:
            for fd in opened.values():
                os.close(fd)
            opened = _landlock.open_all(confine.walls)
            self._walls_fds = (confine.walls_id, opened)
        return opened

    async def _confinement(
        self, runtime: Runtime, cwd: Path, env: dict[str, str]
    ) -> Confinement | None:
        """The Landlock rules of one job (None: not confined): everything but the protected
        folders; inside them its own folder, its agent's socket, its interpreter's
        environment and its mounted inputs (read-only). Its ``TMPDIR`` becomes a folder of
        its own (it may not create entries where the protected folders lie)."""
        if self.protect is None:
            return None
        if not _landlock_ready():
            return None
        job = cwd.parent
        tmp = job / "tmp"
        allowed: list[tuple[str, int]] = [(str(job), _landlock.FULL)]
        if socket := env.get("CAIRN_AGENT_SOCKET"):
            allowed.append((str(Path(socket).parent), _landlock.FULL))
        python = Path(runtime.python)
        allowed.append((str(python.parent.parent), _landlock.READ))  # its environment
        allowed += [(p, _landlock.READ) for p in self.installation]
        protect = self.protect

        def plan() -> Confinement:
            tmp.mkdir(exist_ok=True)
            inputs = cwd / "inputs"  # a mounted folder, or a mounted file in its input's folder
            mounted = [
                (os.path.realpath(p), _landlock.READ)
                for p in [*inputs.glob("*"), *inputs.glob("*/*")]
                if p.is_symlink()
            ]
            made, walls = self._walls
            if time.monotonic() - made > _WALLS_FOR_S:  # what lies beside the walls changes
                made, walls = self._walls = (time.monotonic(), _landlock.walls(protect))
            own = [(os.path.realpath(p), r) for p, r in allowed + mounted]
            return Confinement(made, walls, own)

        confine = await asyncio.to_thread(plan)
        env.update(TMPDIR=str(tmp), TMP=str(tmp), TEMP=str(tmp))
        return confine

    def _zygote(self, python: str) -> Zygote | None:
        """The zygote of ``python``, started as a job's interpreter would be, from the agent's
        environment (a job whose own variables change the start-up is started cold). At most
        ``MAX_ZYGOTES`` environments are kept warm; the jobs of others start cold."""
        zygote = self._zygotes.get(python)
        if zygote is None and len(self._zygotes) < MAX_ZYGOTES:
            env = {**self._base_env(python), "PYTHONUNBUFFERED": "1"}
            zygote = self._zygotes[python] = Zygote(
                python, env, _with_pdeathsig, answer_s=self.warm_answer_s
            )
        return zygote

    def _base_env(self, python: str) -> dict[str, str]:
        """The agent's environment for a job's process with the interpreter's folder first on
        ``PATH`` (``python`` in a shell command is it too). Shared: callers copy it."""
        env = self._base.get(python)
        if env is None:
            env = self._base[python] = dict(self._environ)
            env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def close(self) -> None:
        """Stop the warm interpreters (a job still running from one is killed with it) and the
        keeper (which kills what is left of any job's group)."""
        for zygote in self._zygotes.values():
            zygote.close()
        self._zygotes.clear()
        self._keeper.close()
        for fd in self._walls_fds[1].values():
            os.close(fd)
        self._walls_fds = (-_WALLS_FOR_S, {})


_LANDLOCK_CHECKED: list[bool] = []
#: how long the walls' rules are reused: an entry made beside a wall since is not reachable
#: by the jobs started meanwhile (their own folders always are)
_WALLS_FOR_S = 5.0


def _installation() -> list[str]:
    """The folders of the agent's installation: its prefix and its base interpreter's."""
    found = [os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)]
    return sorted(set(found))


def _landlock_ready() -> bool:
    """Whether this kernel has Landlock; said once in the log when it has not."""
    if not _LANDLOCK_CHECKED:
        ready = _landlock.abi() >= 1
        _LANDLOCK_CHECKED.append(ready)
        if not ready:
            log.warning(
                "landlock_unavailable",
                effect="process-backend jobs can read what the agent's OS user can read",
            )
    return _LANDLOCK_CHECKED[0]


def _room_for_walls() -> None:
    """The walls' paths are held open (once in the agent, once in each warm interpreter):
    raise this process's soft limit of open files to its hard one (at most 65,536), which
    the interpreters it starts inherit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _before_exec(
    dies: bool, rules: list[tuple[str, int]] | None, opened: dict[str, int] | None
) -> Callable[[], None]:
    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        if dies:
            _die_with_parent()
        if rules is not None:
            _landlock.restrict(rules, opened)

    return hook


def _with_pdeathsig(argv: list[str]) -> list[str]:
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV is not None else argv


async def _spawn(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    preexec: Callable[[], None] | None = None,
    started: Callable[[int], None] | None = None,
) -> Launched:
    """Start ``argv`` as a process group of its own, stdout and stderr merged into one pipe;
    ``started`` is told the group at once.

    Through ``subprocess.Popen``, which spawns with ``vfork`` when it can, not the event
    loop's ``subprocess_exec``: uvloop's forks the whole agent (page tables and all), which
    measured ≈ 4 ms of the agent's CPU and ≈ 5 ms of the child's per job against ≈ 0.5 ms
    each (``docs/benchmarks.md``). The exit is awaited through a pidfd where the kernel has
    them, else by a thread."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - a vfork and an exec: microseconds, see above
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec,
    )
    assert proc.stdout is not None
    try:
        if started is not None:
            started(proc.pid)
        output = os.dup(proc.stdout.fileno())
    except BaseException:  # not to be followed: it must not run on (its launch failed)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    return await _attach(proc.pid, output, _exit_of(proc))


async def _attach(pid: int, output: int, exited: Awaitable[int], go: int | None = None) -> Launched:
    """A started process group ``pid``: its output pipe joined to the loop, its exit, and how
    to signal the group. ``go``: the child's go pipe (``_zygote.py``), closed here in every
    case: written once the output is joined, else closed unwritten before the group is
    killed, so that the child leaves by itself even where the kill cannot reach it."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    try:
        pipe = os.fdopen(output, "rb", buffering=0, closefd=not _loop_closes_pipes(loop))
    except BaseException:
        os.close(output)
        await _give_up(pid, exited, go)
        raise
    try:
        await loop.connect_read_pipe(lambda: _OutputProtocol(reader), pipe)
        if go is not None:
            written, go = go, None  # closed below whatever the write does
            try:
                os.write(written, b"1")
            except BrokenPipeError:  # the child died already: its exit tells
                pass
            finally:
                os.close(written)
    except BaseException:
        pipe.close()
        await _give_up(pid, exited, go)
        raise

    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    return Launched(
        reader,
        exited,
        lambda: signal_group(signal.SIGTERM),
        lambda: signal_group(signal.SIGKILL),
        session=pid,
        pid=pid,
    )


def _loop_closes_pipes(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop``'s pipe transport closes the descriptor itself. uvloop's does (libuv
    owns it), then closes the file object it was given too: the same number closed twice, the
    second time maybe another thread's file or pipe, opened in between (uvloop issue 763: a
    launch then failed with ``EBADF``). There the file object must not own the descriptor;
    asyncio's transport closes only the file object, which must."""
    return type(loop).__module__.partition(".")[0] == "uvloop"


class _OutputProtocol(asyncio.StreamReaderProtocol):
    """A job's output: its transport closed at end of file (asyncio's pipe transport does so
    anyway; uvloop's would stay open until collected, with the descriptor)."""

    def eof_received(self) -> bool:
        super().eof_received()
        return False


async def _give_up(pid: int, exited: Awaitable[int], go: int | None) -> None:
    """A started process that is not to be followed: its go pipe (when still open) closed
    unwritten, its group killed, its exit awaited (it must not run on: the run may be
    re-queued)."""
    if go is not None:
        os.close(go)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    await exited


async def _exit_of(proc: subprocess.Popen[bytes]) -> int:
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd here: a thread waits instead
        return await asyncio.to_thread(proc.wait)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()  # reaps at once: the pidfd said it has exited


def job_environ(environ: Mapping[str, str], extra: str = "") -> dict[str, str]:
    """The part of ``environ`` a job's process may see: :data:`JOB_ENV_ALLOW` and ``extra``
    (comma-separated names or ``PREFIX*``). Cairn's own variables never pass."""
    allowed = [*JOB_ENV_ALLOW, *(n.strip() for n in extra.split(",") if n.strip())]
    names = {n for n in allowed if not n.endswith("*")}
    prefixes = tuple(n[:-1] for n in allowed if n.endswith("*"))
    return {
        k: v
        for k, v in environ.items()
        if (k in names or k.startswith(prefixes)) and not k.startswith("CAIRN_")
    }


def docker_client() -> Any:
    """A client of the local Docker engine, or ``Unavailable`` with the reason."""
    import docker

    try:
        client = docker.from_env(timeout=60)
    except Exception as exc:
        raise Unavailable(f"no Docker engine answers: {exc}") from exc
    try:
        client.ping()
    except Exception as exc:
        client.close()
        raise Unavailable(f"no Docker engine answers: {exc}") from exc
    return client


def _sdk_paths() -> list[str]:
    """The agent's import path minus the interpreter's own library."""
    stdlib = {os.path.dirname(os.__file__)}
    return [
        p
        for p in sys.path
        if p and os.path.isdir(p) and p not in stdlib and not p.endswith((".zip", "lib-dynload"))
    ]


#: the waits before each try to remove an attempt's containers after a failed start
_REMOVE_DELAYS_S = (0.0, 1.0, 5.0)
_SGR = re.compile(r"\x1b\[[0-9;]*m")
_BUILD_NOISE = (" ---> ", "Removing intermediate container")


def _tell_build(chunks: Iterable[dict[str, Any]]) -> str | None:
    """Follow an image build's stream, each line of it a phase line (without colours, layer
    ids or intermediate containers); None when it succeeded, else all it said with the
    error last."""
    said: list[str] = []
    for chunk in chunks:
        text = _SGR.sub("", str(chunk.get("stream") or ""))
        said.append(text)
        if "error" in chunk:
            return "".join(said) + str(chunk["error"])
        for line in text.splitlines():
            if line.strip() and not line.startswith(_BUILD_NOISE):
                phase(line)
    return None


class DockerBackend:
    name = "docker"

    def __init__(self, state: Path, base_image: str = BASE_IMAGE) -> None:
        self.client = docker_client()
        self.base_image = base_image
        self.sdk_dir = state / "sdk"
        self._locks: dict[str, asyncio.Lock] = {}
        self._write_sitecustomize()

    def close(self) -> None:
        self.client.close()

    def reap(self, alive: set[str], stack: str) -> list[str]:
        """Remove the job containers of agents of ``stack`` that are gone (a killed agent
        cannot stop its containers; the next agent on the machine does). Another stack's
        containers on the same engine are not this agent's to judge: its agents are not in
        ``alive``. Returns the runs they belonged to."""
        reaped = []
        wanted = {"label": ["cairn.agent", f"{STACK_LABEL}={stack}"]}
        for container in self.client.containers.list(all=True, filters=wanted):
            labels = container.labels or {}
            if labels.get("cairn.agent") not in alive:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
                    reaped.append(labels.get("cairn.run", "?"))
        return reaped

    def _write_sitecustomize(self) -> None:
        self.sdk_dir.mkdir(parents=True, exist_ok=True)
        lines = ["import site"] + [f"site.addsitedir({p!r})" for p in _sdk_paths()]
        (self.sdk_dir / "sitecustomize.py").write_text("\n".join(lines) + "\n")

    async def runtime(self, env: JobEnvironment | None) -> Runtime:
        """The image to run in; ``python`` is the image's: the environment's virtualenv in a
        built image, else ``python3``."""
        image = await self.image_for(env)
        built = image.startswith("cairn-env:")
        return Runtime("/opt/cairn-env/bin/python" if built else "python3", image)

    def _sdk_volumes(self) -> dict[str, dict[str, str]]:
        """The SDK a container imports, read-only: the agent's import path where it is, and
        the site folder (``PYTHONPATH``) that adds it."""
        volumes = {str(self.sdk_dir): {"bind": "/opt/cairn-site", "mode": "ro"}}
        for path in _sdk_paths():
            volumes[path] = {"bind": path, "mode": "ro"}
        return volumes

    async def unpack(self, archive: Path, target: Path) -> None:
        """In a throwaway container of the base image, without network, that sees the archive
        (read-only) and the job's folder alone: a flaw of ``tarfile`` that the checks missed
        could write no further than that folder, never on the agent's host."""
        parent, source = await asyncio.to_thread(
            lambda: (target.parent.resolve(), archive.resolve())
        )
        volumes = {
            str(source): {"bind": "/in/snapshot.tar.gz", "mode": "ro"},
            str(parent): {"bind": "/out", "mode": "rw"},
            **self._sdk_volumes(),
        }
        argv = ["python3", "-m", "cairn.snapshot", "/in/snapshot.tar.gz", f"/out/{target.name}"]
        container = await asyncio.to_thread(
            self.client.containers.run,
            self.base_image,
            argv,
            detach=True,
            network_mode="none",
            volumes=volumes,
            environment={"PYTHONPATH": "/opt/cairn-site"},
            user=f"{os.getuid()}:{os.getgid()}",
            labels={"cairn.unpack": target.name},
        )
        try:
            result = await asyncio.to_thread(container.wait)
            said = await asyncio.to_thread(container.logs, stdout=False, stderr=True)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.remove, force=True)
        code = int(result.get("StatusCode", -1))
        lines = said.decode(errors="replace").strip().splitlines()
        if code == 2:
            raise SnapshotRefused(lines[-1] if lines else "the archive was refused")
        if code != 0:
            raise InvalidInput(
                f"unpacking the snapshot in {self.base_image} failed with status {code}: "
                + " / ".join(lines[-3:])
            )

    async def image_for(self, env: JobEnvironment | None) -> str:
        base = (env.spec.docker_image if env is not None else None) or self.base_image
        packages = list(env.spec.pip) if env is not None and not env.spec.user_managed else []
        if not packages:
            await asyncio.to_thread(self._require_image, base)
            return base
        assert env is not None
        tag = f"cairn-env:{env.spec_hash.removeprefix('sha256:')[:24]}"
        lock = self._locks.setdefault(tag, asyncio.Lock())
        if lock.locked():
            phase(f"waiting for another job's build of image {tag}")
        async with lock:
            await asyncio.to_thread(self._build, tag, base, packages)
        return tag

    def _require_image(self, image: str) -> None:
        import docker.errors

        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound as exc:
            raise InvalidInput(f"image {image!r} is not on this agent's Docker engine") from exc

    def _build(self, tag: str, base: str, packages: list[str]) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.ImageNotFound):
            self.client.images.get(tag)
            return
        self._require_image(base)
        context = io.BytesIO()
        requirements = []
        with tarfile.open(fileobj=context, mode="w") as tar:
            for spec in packages:
                if os.path.isfile(spec):  # a local wheel or sdist travels in the context
                    tar.add(spec, arcname=f"wheels/{os.path.basename(spec)}")
                    requirements.append(f"/tmp/wheels/{os.path.basename(spec)}")
                else:
                    requirements.append(spec)
            dockerfile = "\n".join(
                [
                    f"FROM {base}",
                    "COPY wheels/ /tmp/wheels/",
                    "RUN python3 -m venv /opt/cairn-env && /opt/cairn-env/bin/pip install"
                    " --no-cache-dir --disable-pip-version-check "
                    + " ".join(f"'{r}'" for r in requirements),
                    "RUN rm -rf /tmp/wheels",
                ]
            ).encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
            keep = tarfile.TarInfo("wheels/.keep")
            tar.addfile(keep, io.BytesIO(b""))
        context.seek(0)
        log.info("image_build", tag=tag, base=base, packages=packages)
        started = time.monotonic()
        count = f"{len(packages)} package" + ("" if len(packages) == 1 else "s")
        phase(f"building image {tag} from {base} ({count})")
        built = self.client.api.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
        )
        said = _tell_build(built)
        if said is not None:
            phase(f"building image {tag} failed")
            raise InvalidInput(f"building image {tag} failed: {said[-4000:]}")
        phase(f"image {tag} ready in {time.monotonic() - started:.1f} s")

    async def _run_container(
        self, image: str | None, argv: list[str], labels: dict[str, str], **options: Any
    ) -> Any:
        """Start the job's container; ``Unavailable`` when the engine did not answer or
        answered with a server error (5xx: its own trouble; some engines also report a command
        that is not in the image this way, which is then tried again within the run's attempt
        budget and named when it ends it), the engine's refusal otherwise (4xx: the job's
        own, an image that is not there, a bad command).

        An engine that did not answer, or answered 5xx, may still have created or started the
        container (a start that outlived the client's timeout): the containers labelled with
        this attempt are removed first (:meth:`_remove_attempt`), and where that cannot be
        confirmed, the launch fails with a ``CairnError`` that does not re-queue the run. After
        a refusal, a container created before it (not running) is removed once, a failure
        to do so logged."""
        import docker.errors

        given_up = threading.Lock()  # held by whichever of the call and its giving up is last
        ended = [False, False]  # the engine's call returned; the launch was given up

        def run() -> Any:
            try:
                return self.client.containers.run(image, argv, labels=labels, **options)
            finally:
                with given_up:
                    ended[0] = True
                    abandoned = ended[1]
                if abandoned:  # nobody follows what this call started: it goes
                    self._remove_unfollowed(labels)

        try:
            return await asyncio.to_thread(run)
        except asyncio.CancelledError:
            # the engine's call goes on in its thread and may yet start the container, which
            # nobody would follow: removed once the call returns, by its own thread (which the
            # interpreter waits for even when the agent is stopping)
            with given_up:
                ended[1] = True
                returned = ended[0]
            if returned:  # returned just as the launch was given up
                threading.Thread(target=self._remove_unfollowed, args=(labels,)).start()
            raise
        except docker.errors.APIError as exc:
            if not exc.is_server_error():  # the job's own; a container it created goes
                try:
                    await asyncio.to_thread(self._remove_labelled, _attempt_labels(labels))
                except Exception as removing:  # not running (refused): left, and said
                    log.warning("attempt_container_left", labels=labels, error=repr(removing))
                raise
            cause: BaseException = exc
            said = f"the Docker engine could not start the job now: {exc}"
        except docker.errors.DockerException:
            raise
        except OSError as exc:  # the HTTP client's connection errors and timeouts
            cause, said = exc, f"the Docker engine did not answer: {exc!r}"
        await self._remove_attempt(labels, cause)
        raise Unavailable(said) from cause

    def _remove_unfollowed(self, labels: dict[str, str]) -> BaseException | None:
        """Remove every container of this attempt (by its ``cairn.run`` and ``cairn.attempt``
        labels), a few tries (blocking: in a thread); None once the engine lists none, else
        the last try's error, logged. Called for a launch given up while the engine started
        it (in the engine call's own thread), and through :meth:`_remove_attempt`."""
        wanted = _attempt_labels(labels)
        last: BaseException | None = None
        for delay in _REMOVE_DELAYS_S:
            time.sleep(delay)
            try:
                self._remove_labelled(wanted)
                return None
            except Exception as exc:  # the engine still in trouble: tried again
                last = exc
        log.error("attempt_containers_not_removed", labels=wanted, error=repr(last))
        return last

    async def _remove_attempt(self, labels: dict[str, str], cause: BaseException) -> None:
        """The attempt's containers removed (:meth:`_remove_unfollowed`); a ``CairnError``
        naming ``cause`` when no try confirmed that none is left: the attempt may be running
        unfollowed, so its run must not be re-queued."""
        last = await asyncio.to_thread(self._remove_unfollowed, labels)
        if last is not None:
            raise CairnError(
                f"the job's container may have started ({cause!r}) and could not be removed:"
                f" {last!r}; the run is not re-queued, so that it does not run twice"
            ) from cause

    def _remove_labelled(self, wanted: list[str]) -> None:
        """Remove the containers labelled with all of ``wanted``; raises unless the engine
        then lists none."""
        import docker.errors

        for container in self.client.containers.list(all=True, filters={"label": wanted}):
            with contextlib.suppress(docker.errors.NotFound):  # gone meanwhile
                container.remove(force=True)
        left = self.client.containers.list(all=True, filters={"label": wanted})
        if left:
            raise Unavailable(f"{len(left)} container(s) of the attempt left")

    async def launch(
        self,
        runtime: Runtime,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        labels: dict[str, str],
        gpus: list[int],
    ) -> Launched:
        import docker.types

        environment = {k: v for k, v in env.items() if k not in _SKIP_ENV}
        environment["PYTHONPATH"] = "/opt/cairn-site"
        volumes = {str(cwd): {"bind": "/workspace", "mode": "rw"}, **self._sdk_volumes()}
        socket = env.get("CAIRN_AGENT_SOCKET")
        if socket:  # the job's way to its agent: the socket's private folder, nothing else
            volumes[str(Path(socket).parent)] = {"bind": _GATE_MOUNT, "mode": "rw"}
            environment["CAIRN_AGENT_SOCKET"] = f"{_GATE_MOUNT}/{Path(socket).name}"
        home = env.get("CAIRN_HOME", "")
        if home.startswith(f"{cwd}/"):  # the job's private home, inside its folder
            environment["CAIRN_HOME"] = "/workspace/" + home.removeprefix(f"{cwd}/")
        requests = []
        if gpus:  # the devices this job was given, through the NVIDIA container toolkit
            ids = [str(i) for i in gpus]
            requests.append(docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]]))
        container = await self._run_container(
            runtime.image,
            argv,
            labels,
            detach=True,
            network_mode="host",
            working_dir="/workspace",
            volumes=volumes,
            environment=environment,
            user=f"{os.getuid()}:{os.getgid()}",
            device_requests=requests,
        )
        try:  # from here on, whatever is raised, the container must not run on
            loop = asyncio.get_running_loop()
            output = asyncio.StreamReader()

            def stream() -> None:
                try:
                    for chunk in container.logs(stream=True, follow=True):
                        loop.call_soon_threadsafe(output.feed_data, chunk)
                finally:
                    loop.call_soon_threadsafe(output.feed_eof)

            try:
                threading.Thread(
                    target=stream, name=f"logs-{container.short_id}", daemon=True
                ).start()
            except RuntimeError as exc:  # no thread now: the container must not run unfollowed
                await self._remove_attempt(labels, exc)
                raise Unavailable(f"the job's output cannot be followed now: {exc}") from exc

            async def wait() -> int:
                result = await asyncio.to_thread(container.wait)
                return int(result.get("StatusCode", -1))

            def send(sig: str) -> None:
                with contextlib.suppress(Exception):  # already gone
                    container.kill(signal=sig)

            def remove() -> None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)

            pid = await asyncio.to_thread(_container_pid, container)
            return Launched(
                output,
                wait(),
                lambda: send("SIGTERM"),
                lambda: send("SIGKILL"),
                remove,
                pid=pid,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(container.remove, force=True))
            raise


def _attempt_labels(labels: dict[str, str]) -> list[str]:
    """The label filters that name one attempt's containers."""
    return [f"{k}={labels[k]}" for k in ("cairn.run", "cairn.attempt") if k in labels]


def _container_pid(container: Any) -> int | None:
    """The container's first process as the engine's pid namespace numbers it: this agent's
    too when it shows that process (else None: an agent in a container of its own). Never
    raises: the container runs already, and a launch that raised would leave it behind."""
    try:
        container.reload()
        pid = int(container.attrs["State"]["Pid"])
        return pid if pid > 0 and _shown_here(pid) else None
    except Exception:  # gone already, or an engine that does not say
        return None


def _shown_here(pid: int) -> bool:
    """Whether ``pid`` (the engine's number) names a container's first process in this
    agent's pid namespace: a process there in a pid namespace of its own, below ours, where
    it is process 1. ``/proc/<pid>/status`` is read as bytes: its ``Name:`` line is the
    process's to choose, in any bytes."""
    try:
        status = Path(f"/proc/{pid}/status").read_bytes()
        ours = os.readlink("/proc/self/ns/pid")
        theirs = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return False
    nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith(b"NSpid:")), [])
    # NSpid lists the process's number in each namespace from ours down to its own: the
    # first is always ``pid``, the last is 1 for a namespace's first process
    return theirs != ours and len(nspid) > 1 and nspid[-1] == b"1"
