"""A warm interpreter that forks job processes: ``python _zygote.py FD``.

Run as a script by the agent (``cairn.services.agent._warm``), never imported: when it forks,
it must hold nothing but the interpreter's start-up and a few standard modules, so that the
child is what ``python script.py`` would have been. It answers on the ``SOCK_SEQPACKET``
socket ``FD``: each request is a job (JSON: ``id``, ``argv`` = script or ``-m module`` and
its arguments, ``cwd``, ``env``) with the write end of the job's output pipe and the read end
of its *go* pipe attached; it forks, answers ``{"id", "pid"}``, and when a child exits,
``{"pid", "exit"}`` (the exit code, or minus the signal). The child starts a session of its
own at once (a kill of its group reaches it from then on) and runs nothing of the job before
the agent writes a byte on the go pipe, which it does once it has the pid and has joined the
output pipe to its loop; an agent that gave up waiting, or failed to take the child, closes
it instead, and the child leaves: a job whose launch failed can be re-queued or started cold
without the child running it a second time. End of file on
the socket (the agent is gone) ends it; its children die with it (``PR_SET_PDEATHSIG``). A
request's ``rules`` confine the child to the job's files (``_landlock.py``) before it runs
anything of the job's. A request with ``exec`` is a cold start: the child executes ``argv``
(a whole command) instead of running Python here.

The child takes the pipe as stdout and stderr, the job's working
folder, environment and ``sys.argv``, puts the script's folder first on ``sys.path`` and runs it
as ``__main__`` with ``runpy``. Not carried over from a cold start: anything Python reads from
the environment at start-up (the agent sends a job here only when those variables match this
interpreter's), and the hash seed (shared by the children of one zygote). A job's exit
runs ``atexit`` and joins its threads, then leaves without tearing down every object.
"""

from __future__ import annotations

import atexit
import builtins
import ctypes
import gc
import importlib.machinery
import io
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import types
from typing import Any

_PR_SET_PDEATHSIG = 1


def _beside(name: str) -> types.ModuleType:
    """A module of this folder, loaded by path (this script imports nothing of Cairn)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    loader = importlib.machinery.SourceFileLoader(name, path)
    module = types.ModuleType(name)
    module.__file__ = path
    loader.exec_module(module)
    return module


_landlock = _beside("_landlock")
_OURS = {__file__, runpy.__file__, "<frozen runpy>"}


try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (AttributeError, OSError):
    _prctl = None


def _die_with_parent(parent: int) -> None:
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        sock.send(json.dumps({"pid": pid, "exit": code}).encode())


#: the walls' Landlock rules the agent sent last (``walls_id``, rules, an open descriptor per
#: path): opened once here, used by every child until the agent sends newer ones
_WALLS: dict[str, Any] = {"id": None, "rules": [], "fds": {}}


def _keep_walls(job: dict[str, Any]) -> None:
    walls = job.pop("walls", None)
    if walls is None or job.get("walls_id") == _WALLS["id"]:
        return
    for fd in _WALLS["fds"].values():
        os.close(fd)
    rules = [(path, rights) for path, rights in walls]
    _WALLS.update(id=job.get("walls_id"), rules=rules, fds=_landlock.open_all(rules))


def serve(sock: socket.socket) -> tuple[dict[str, Any], int]:
    """Answer the agent until a forked child returns with its job and output pipe."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    me = os.getpid()
    while True:
        for key, _ in selector.select():
            if key.fileobj is not sock:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                _reap(sock)
                continue
            message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 2)
            if not message:
                os._exit(0)  # the agent is gone
            job = json.loads(message)
            _keep_walls(job)
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                selector.close()
                for fd in (wake_r, wake_w):
                    os.close(fd)
                sock.close()
                _die_with_parent(me)
                # a session of its own before it waits: a kill of the group that the agent
                # sends when it gives this child up reaches it from now on
                os.setsid()
                if len(fds) > 1:
                    _wait_for_go(fds[1])
                return job, fds[0]
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"id": job["id"], "pid": pid}).encode())


def _wait_for_go(go: int) -> None:
    """Run nothing of the job until the agent has taken this child as its job's process: it
    writes a byte on ``go`` once it has the pid and the output pipe is joined to its loop.
    End of file instead (the agent gave up waiting for this answer, or could not take the
    child, and may have started the job cold or re-queued it, or it died) means the job is
    not this child's to run: it leaves at once."""
    try:
        said = os.read(go, 1)
    except OSError:
        said = b""
    os.close(go)
    if not said:
        os._exit(0)


def become(job: dict[str, Any], output: int) -> None:
    """Turn this forked child into the job's process, as a cold start would have made it
    (it is in a session of its own already)."""
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    sys.argv = list(job["argv"])
    if job_site := os.environ.get("CAIRN_JOB_SITE"):
        _add_job_site(job_site)
    if job.get("rules") is not None:  # kept out of the agent's files (``_landlock.py``)
        if job.get("walls_id") != _WALLS["id"]:
            print("cairn: the job's confinement rules did not arrive", file=sys.stderr)
            os._exit(126)
        own = [(path, rights) for path, rights in job["rules"]]
        try:
            _landlock.restrict(_WALLS["rules"] + own, _WALLS["fds"])
        except OSError as exc:
            print(f"cairn: cannot confine the job to its folder: {exc}", file=sys.stderr)
            os._exit(126)
        for fd in _WALLS["fds"].values():
            os.close(fd)


def _add_job_site(path: str) -> None:
    """The job's own packages on ``sys.path`` where a cold start's ``.pth`` puts them: after
    the environment's ``site-packages``, before the agent's (``_env``)."""
    if path in sys.path:
        return
    ours = [
        i
        for i, p in enumerate(sys.path)
        if p.startswith(sys.prefix + os.sep) and p.endswith("site-packages")
    ]
    sys.path.insert(ours[-1] + 1 if ours else len(sys.path), path)


def _execute(argv: list[str]) -> None:
    """Replace this child with the job's command (a cold start); 127 when it cannot start."""
    try:
        os.execvpe(argv[0], argv, os.environ)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
        print(f"cannot start {argv[0]!r}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)


def run(job: dict[str, Any]) -> int:
    """Run the job's script (or module) as ``__main__``; its exit code."""
    argv = job["argv"]
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            _run_script(os.path.abspath(argv[0]))
    except SystemExit as exc:
        return _exit_code(exc.code)
    except BaseException:
        kind, value, tb = sys.exc_info()
        while tb is not None and tb.tb_frame.f_code.co_filename in _OURS:
            tb = tb.tb_next  # the job's frames, not the zygote's or runpy's
        assert kind is not None and value is not None
        sys.excepthook(kind, value.with_traceback(tb), tb)
        return 1
    return 0


def _run_script(path: str) -> None:
    """What ``python path`` does with its script: a fresh ``__main__`` module whose
    ``__file__`` is the absolute path, the script's folder first on ``sys.path``."""
    sys.path[0] = os.path.dirname(path)
    with io.open_code(path) as f:
        code = compile(f.read(), path, "exec")
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=path,
        __cached__=None,
        __builtins__=builtins,
        __loader__=importlib.machinery.SourceFileLoader("__main__", path),
    )
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def finish(code: int) -> None:
    """Leave as an interpreter does (non-daemon threads joined, ``atexit`` handlers run,
    streams flushed) without tearing down every object: in a forked child that would touch,
    and so copy, most of the zygote's memory."""
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    channel = socket.socket(fileno=int(sys.argv[1]))
    gc.freeze()  # what the zygote holds now stays out of the children's collections
    job, output = serve(channel)
    become(job, output)
    del channel, output
    if job.get("exec"):
        _execute(job["argv"])
    finish(run(job))
