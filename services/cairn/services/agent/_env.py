"""Python environments for jobs: the agent's own interpreter, or a cached virtualenv per spec.

A job with no environment, or one that installs nothing and asks for no other Python, runs on
the agent's interpreter. Otherwise the agent builds a virtualenv with ``uv`` under
``<cache>/envs/<spec hash>``: into a temporary folder first, renamed into place when complete,
under a file lock, so concurrent builds of one hash (in this agent or in another on the same
machine) build once. Conda dependencies are installed from PyPI by name (agents carry no
conda); ``python`` and ``pip`` among them are skipped.

The environment also sees the agent's own packages *after* its own (a ``.pth`` file), so
the SDK's ``Run`` imports in a job without installing Cairn into every environment,
while the job's pins win.

A build tells its phases (``_phases``: the job's log stream shows them): the virtualenv, the
install with uv's own lines, the time it took; and a job that waits for another's build of
the same environment says so.
"""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import site
import sys
import threading
import time
import uuid
from pathlib import Path

from cairn.errors import InvalidInput
from cairn.log import get_logger
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


def env_label(env: JobEnvironment) -> str:
    """How phase lines name an environment: its name and version, or its spec's hash."""
    if env.name is None:
        return f"environment {env.spec_hash.removeprefix('sha256:')[:12]}"
    return f"environment {env.name}" + (f" v{env.version}" if env.version is not None else "")


def _run_telling(argv: list[str], timeout_s: float) -> tuple[int, str]:
    """Run ``argv``, each line of its output a phase line as it comes; its exit code and
    output (killed past ``timeout_s``)."""
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
            phase(line)
        return proc.wait(), "".join(lines)
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()


class Environments:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def needs_build(env: JobEnvironment | None) -> bool:
        if env is None or env.spec.user_managed:
            return False
        spec = env.spec
        other_python = spec.python is not None and spec.python != _agent_python()
        return bool(spec.pip or [c for c in spec.conda if _conda_to_pip(c)] or other_python)

    async def python_for(self, env: JobEnvironment | None) -> Path:
        """The interpreter a job of ``env`` runs with (building its virtualenv first)."""
        if env is None or not self.needs_build(env):
            return Path(sys.executable)
        key = env.spec_hash.removeprefix("sha256:")[:32]
        target = self.root / key
        python = target / "bin" / "python"
        if (target / ".ready").exists():
            return python
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked():
            phase(f"waiting for another job's build of {env_label(env)}")
        async with lock:
            await asyncio.to_thread(self._build_locked, env, target)
        return python

    def _build_locked(self, env: JobEnvironment, target: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{target.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another agent on this machine is building it
                phase(f"waiting for another agent's build of {env_label(env)}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if (target / ".ready").exists():
                return
            tmp = self.root / f".{target.name}.{uuid.uuid4().hex[:8]}"
            try:
                self._build(env, tmp)
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def _build(self, env: JobEnvironment, folder: Path) -> None:
        from uv import find_uv_bin

        uv = find_uv_bin()
        spec = env.spec
        python = spec.python or sys.executable
        packages = list(spec.pip) + [p for c in spec.conda if (p := _conda_to_pip(c))]
        log.info("environment_build", name=env.name, version=env.version, packages=packages)
        started = time.monotonic()
        label = env_label(env)
        count = f"{len(packages)} package" + ("" if len(packages) == 1 else "s")
        phase(f"building {label} ({count})")
        venv_python = str(folder / "bin" / "python")
        steps = [
            (
                f"creating a virtualenv (python {spec.python or _agent_python()})",
                [uv, "venv", "--quiet", "--python", python, str(folder)],
            )
        ]
        if packages:
            install = [uv, "pip", "install", "--python", venv_python, *packages]
            steps.append((f"installing {count} with uv", install))
        for name, argv in steps:
            phase(name)
            code, said = _run_telling(argv, 1800)
            if code != 0:
                phase(f"building {label} failed")
                raise EnvironmentBuildFailed(
                    f"building environment {env.name or env.spec_hash[:19]} failed:"
                    f" {said.strip()[-4000:]}"
                )
        same_python = spec.python in (None, _agent_python())
        if same_python:  # the agent's packages (Cairn's SDK among them) after the job's own
            lib = folder / "lib" / f"python{_agent_python()}" / "site-packages"
            dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
            lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
            (lib / "_cairn_agent.pth").write_text("\n".join(lines) + "\n")
        (folder / ".ready").write_text(env.spec_hash + "\n")
        phase(f"{label} ready in {time.monotonic() - started:.1f} s")
