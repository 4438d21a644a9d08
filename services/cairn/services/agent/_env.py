"""Python environments for jobs: a cached virtualenv per spec, never the agent's interpreter.

A job with no environment, or one that installs nothing and asks for no other Python, runs in
the agent's *default environment*: a virtualenv of the agent's Python with nothing installed,
built once under ``<cache>/envs/default-<X.Y>``. Otherwise the agent builds a virtualenv with
``uv`` under ``<cache>/envs/<spec hash>``, with the Python the spec pins (``python=X.Y``,
also among conda dependencies; ``uv`` finds an installed one or downloads one): into a
temporary folder first, renamed into place when complete, under a file lock, so concurrent
builds of one hash (in this agent or in another on the same machine) build once. Conda
dependencies are installed from PyPI by name (agents carry no conda); ``python`` and ``pip``
among them are skipped. A spec with a docker image is refused: a process agent has no way to
run an image, and running it on the host's Python instead would not be what was asked.

An environment of the agent's Python also sees the agent's own packages *after* its own (a
``.pth`` file), so the SDK's ``Run`` imports in a job without installing Cairn into every
environment, while the job's pins win; and its ``bin/pip`` is the agent's pip run by the
environment's interpreter, so ``pip install`` in a job installs into the job's own folder
(``CAIRN_JOB_SITE``, on ``sys.path`` through the same ``.pth``), never into the shared
environment or the agent's installation (see ``docs/design.md``).

A build tells its phases (``_phases``: the job's log stream shows them): the virtualenv, the
install with uv's own lines, the time it took; and a job that waits for another's build of
the same environment says so.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import shutil
import site
import sys
import threading
import time
import uuid
from pathlib import Path

from cairn.domain.environment import python_pin
from cairn.errors import InvalidInput
from cairn.log import get_logger
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.jobs import JobEnvironment
from cairn.services.agent._phases import phase

__all__ = ["EnvironmentBuildFailed", "Environments"]

log = get_logger("cairn.agent")
_SKIP_CONDA = {"python", "pip", "setuptools", "wheel"}


class EnvironmentBuildFailed(InvalidInput):
    """The environment's packages could not be installed (a user error, not the agent's)."""


def _conda_to_pip(spec: str) -> str | None:
    name = spec.split("=")[0].split("<")[0].split(">")[0].strip()
    if not name or name.lower() in _SKIP_CONDA:
        return None
    pins = spec[len(name) :].strip()
    if pins.startswith("=") and not pins.startswith("=="):
        pins = "=" + pins  # conda's single '=' pin is pip's '=='
    return name + pins


def _agent_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _pinned(spec: EnvironmentSpec) -> str | None:
    pin = python_pin(spec)
    return None if pin is None else f"{pin[0]}.{pin[1]}"


#: the environment of jobs that name none (or install nothing on the agent's Python)
DEFAULT = JobEnvironment(name="cairn-default", spec=EnvironmentSpec())

#: ``bin/pip`` of an environment: the agent's pip run by the environment's interpreter; in a
#: job (``CAIRN_JOB_SITE`` set) an install goes to the job's own folder (``--target``), which
#: the environment's ``.pth`` puts on ``sys.path`` after the environment's packages
_PIP = """import os, sys, sysconfig, tempfile
args = sys.argv[1:]
command = next((a for a in args if not a.startswith("-")), None)
into = ("-t", "--target", "--prefix", "--root", "--user")
if command == "install" and not any(a.split("=")[0] in into for a in args):
    if os.environ.get("CAIRN_JOB_SITE"):
        sys.argv[1:] = [*args, "--target", os.environ["CAIRN_JOB_SITE"]]
    else:
        try:
            tempfile.TemporaryFile(dir=sysconfig.get_path("purelib")).close()
        except OSError:
            sys.exit("cairn: this environment is read-only here (" + sys.prefix + "): name"
                     " the packages a job needs in its environment")
from pip._internal.cli.main import main
sys.exit(main())
"""

#: the first line of an environment's ``.pth``: the job's own packages (``CAIRN_JOB_SITE``),
#: after the environment's and before the agent's
_JOB_SITE = "import os, site; p = os.environ.get('CAIRN_JOB_SITE'); p and site.addsitedir(p)"


def env_label(env: JobEnvironment) -> str:
    """How phase lines name an environment: its name and version, or its spec's hash."""
    if env.name is None:
        return f"environment {env.spec_hash.removeprefix('sha256:')[:12]}"
    return f"environment {env.name}" + (f" v{env.version}" if env.version is not None else "")


def _run_telling(argv: list[str], timeout_s: float, tell: bool = True) -> tuple[int, str]:
    """Run ``argv``, each line of its output a phase line as it comes (when ``tell``); its
    exit code and output (killed past ``timeout_s``)."""
    import subprocess

    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if tell:
                phase(line)
        return proc.wait(), "".join(lines)
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()


class Environments:
    def __init__(self, root: Path, *, downloads: bool = False) -> None:
        self.root = root
        #: whether ``uv`` may download a pinned Python this machine lacks (the agent
        #: advertises what it can give on that basis, so the build must agree)
        self.downloads = downloads
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def needs_build(env: JobEnvironment | None) -> bool:
        """Whether ``env`` needs a virtualenv of its own (else: the default environment)."""
        if env is None or env.spec.user_managed:
            return False
        spec = env.spec
        pinned = _pinned(spec)
        other_python = pinned is not None and pinned != _agent_python()
        return bool(spec.pip or [c for c in spec.conda if _conda_to_pip(c)] or other_python)

    async def python_for(self, env: JobEnvironment | None) -> Path:
        """The interpreter a job of ``env`` runs with (building its virtualenv first)."""
        if env is not None and env.spec.docker_image:
            raise InvalidInput(
                f"{env_label(env)} runs in the docker image {env.spec.docker_image!r}, and this"
                " agent runs jobs as processes on its host: submit it to a compute target"
                " served by docker agents (cairn agent --backend docker)"
            )
        if env is None or not self.needs_build(env):
            return await self._ready(DEFAULT, f"default-{_agent_python()}", tell=False)
        return await self._ready(env, env.spec_hash.removeprefix("sha256:")[:32], tell=True)

    async def _ready(self, env: JobEnvironment, key: str, *, tell: bool) -> Path:
        target = self.root / key
        python = target / "bin" / "python"
        if (target / ".ready").exists():
            return python
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked() and tell:
            phase(f"waiting for another job's build of {env_label(env)}")
        async with lock:
            await asyncio.to_thread(self._build_locked, env, target, tell)
        return python

    def _build_locked(self, env: JobEnvironment, target: Path, tell: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{target.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another agent on this machine is building it
                if tell:
                    phase(f"waiting for another agent's build of {env_label(env)}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if (target / ".ready").exists():
                return
            tmp = self.root / f".{target.name}.{uuid.uuid4().hex[:8]}"
            try:
                self._build(env, tmp, tell)
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def _build(self, env: JobEnvironment, folder: Path, tell: bool) -> None:
        from uv import find_uv_bin

        uv = find_uv_bin()
        spec = env.spec
        pinned = _pinned(spec)
        packages = list(spec.pip) + [p for c in spec.conda if (p := _conda_to_pip(c))]
        log.info("environment_build", name=env.name, version=env.version, packages=packages)
        started = time.monotonic()
        label = env_label(env)
        count = f"{len(packages)} package" + ("" if len(packages) == 1 else "s")
        say = phase if tell else (lambda _: None)
        say(f"building {label} ({count})")
        venv_python = str(folder / "bin" / "python")
        same_python = pinned in (None, _agent_python())
        python = sys.executable if same_python else str(pinned)
        downloads = [] if self.downloads else ["--no-python-downloads"]
        steps = [
            (
                f"creating a virtualenv (python {pinned or _agent_python()})",
                [uv, "venv", "--quiet", "--no-config", *downloads, "--python", python, str(folder)],
            )
        ]
        if packages:
            install = [uv, "pip", "install", "--python", venv_python, *packages]
            steps.append((f"installing {count} with uv", install))
        for name, argv in steps:
            say(name)
            code, said = _run_telling(argv, 1800, tell)
            if code != 0:
                say(f"building {label} failed")
                raise EnvironmentBuildFailed(
                    f"building environment {env.name or env.spec_hash[:19]} failed:"
                    f" {said.strip()[-4000:]}"
                )
        if same_python:
            _add_agent_packages(folder)
        (folder / ".ready").write_text((env.spec_hash or "default") + "\n")
        say(f"{label} ready in {time.monotonic() - started:.1f} s")


def _add_agent_packages(folder: Path) -> None:
    """The agent's packages (Cairn's SDK among them) after the environment's own, and a
    ``pip`` that installs into the environment (uv's virtualenvs have none)."""
    lib = folder / "lib" / f"python{_agent_python()}" / "site-packages"
    dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    lines = [_JOB_SITE] + [f"import site; site.addsitedir({d!r})" for d in dirs]
    (lib / "_cairn_agent.pth").write_text("\n".join(lines) + "\n")
    bindir = folder / "bin"
    if importlib.util.find_spec("pip") is not None and not (bindir / "pip").exists():
        # relative to itself: the folder is built elsewhere and renamed into place
        (folder / "cairn-pip.py").write_text(_PIP)
        run = '#!/bin/sh\nexec "$(dirname "$0")/python" "$(dirname "$0")/../cairn-pip.py" "$@"\n'
        for name in ("pip", "pip3", f"pip{_agent_python()}"):
            (bindir / name).write_text(run)
            (bindir / name).chmod(0o755)
