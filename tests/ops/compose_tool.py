"""A Compose implementation for checking compose/compose.yaml, made to exist the way
tests/docker_engine.py makes the engine: the Docker CLI's plugin (``docker compose``) or a
``docker-compose`` already on the machine, else Debian's ``docker-compose`` package
installed through apt (as root). Debian 12 (bookworm) packages Compose v1 (1.29.2, the
Python ``docker-compose`` command, which reads the Compose Specification); Debian 13
packages Compose v2 (the Go one, also a ``docker compose`` plugin). ``config`` reads the
file and needs no engine."""

from __future__ import annotations

import os
import shutil
import subprocess


def _answers(argv: list[str]) -> str | None:
    """The version line of a compose command, or None when it is not one."""
    try:
        done = subprocess.run(
            [*argv, "version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return (done.stdout.strip().splitlines() or ["?"])[0]


def _found() -> tuple[list[str], str] | None:
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if docker_compose := shutil.which("docker-compose"):
        candidates.append([docker_compose])
    for argv in candidates:
        version = _answers(argv)
        if version is not None:
            return argv, version
    return None


def _install() -> str | None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "no compose command, and apt-get cannot install docker-compose here (not root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "docker-compose"],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}"
    return None


def compose_command() -> tuple[list[str], str] | str:
    """(the argv that runs compose, its version line), or why there is none."""
    found = _found()
    if found is not None:
        return found
    reason = _install()
    if reason:
        return reason
    return _found() or "docker-compose was installed but does not answer `version`"
