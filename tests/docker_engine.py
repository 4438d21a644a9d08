"""A real Docker engine for the container tests, made to exist the way the brief describes:
Debian ``docker.io`` installed when missing (as root, through apt), ``dockerd`` started when
none answers (``--iptables=false --bridge=none``: jobs use the host network), and the base
image built locally by ``ops/base-image.sh`` (debootstrap + docker import, cached)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "cairn-base:bookworm"


def _socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host.removeprefix("unix://")


def _ping() -> bool:
    """An engine answers on its socket (tried with a socket of our own first: docker-py
    leaves a refused one unclosed)."""
    import docker

    path = _socket_path()
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(2)
            probe.connect(path)
    except OSError:
        return False
    client = docker.from_env(timeout=5)
    try:
        client.ping()
    except Exception:
        return False
    finally:
        client.close()
    return True


def _install() -> str | None:
    if shutil.which("dockerd") and shutil.which("debootstrap"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "dockerd/debootstrap are missing and apt-get cannot install them (not root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "docker.io", "debootstrap"],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}"
    return None


def _start_daemon(log: Path) -> str | None:
    if os.geteuid() != 0:
        return "no Docker engine answers, and only root can start dockerd here"
    # detached (the daemon outlives the tests, like a service would); its log goes to `log`
    subprocess.run(
        ["sh", "-c", f"setsid dockerd --iptables=false --bridge=none >>'{log}' 2>&1 &"],
        check=True,
        timeout=30,
    )
    for _ in range(120):
        if _ping():
            return None
        time.sleep(0.5)
    return f"dockerd did not answer within 60 s (see {log})"


def ensure_engine(log_dir: Path) -> str | None:
    """None when an engine answers and the base image is there; else why not."""
    if not _ping():
        reason = _install() or _start_daemon(log_dir / "dockerd.log")
        if reason:
            return reason
    done = subprocess.run(
        ["sh", str(ROOT / "ops" / "base-image.sh"), BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        return f"building {BASE_IMAGE} failed: {done.stderr.strip()[-800:]}"
    return None


def leftovers() -> set[str]:
    """What Cairn made in the engine: its containers (``cairn.*`` labels) and the
    environment images agents build (``cairn-env:*``), as ``container:ID`` / ``image:ID``."""
    import docker

    client = docker.from_env(timeout=60)
    try:
        found = {
            f"container:{c.id}"
            for label in ("cairn.run", "cairn.unpack")
            for c in client.containers.list(all=True, filters={"label": label})
        }
        found |= {
            f"image:{i.id}"
            for i in client.images.list()
            if any(tag.startswith("cairn-env:") for tag in i.tags)
        }
        return found
    finally:
        client.close()


def remove(things: set[str]) -> None:
    """Containers first, then the images they ran."""
    import docker

    client = docker.from_env(timeout=120)
    try:
        for thing in sorted(things, key=lambda t: not t.startswith("container:")):
            kind, ident = thing.split(":", 1)
            try:
                if kind == "container":
                    client.containers.get(ident).remove(force=True)
                else:
                    client.images.remove(ident, force=True)
            except docker.errors.NotFound:
                pass
    finally:
        client.close()
