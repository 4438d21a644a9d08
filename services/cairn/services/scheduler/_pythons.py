"""Which Python versions a job may pin: the CPython interpreters ``uv`` finds on this machine
(``uv python list --only-installed``), and, where ``python_downloads`` is on, those it can
download (python-build-standalone). A submit that pins another is refused before it is
queued, naming the closest one, instead of failing when an agent builds its environment.

The list is read once and kept for ``_KEEP_S``: a new interpreter is seen within a minute."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

from cairn.domain.environment import closest_python, python_pin
from cairn.errors import InvalidInput, Unavailable
from cairn.proto.assets import EnvironmentSpec

__all__ = ["Pythons"]

_KEEP_S = 60.0


def _listed(downloads: bool) -> list[tuple[int, int]]:
    from uv import find_uv_bin

    argv = [find_uv_bin(), "python", "list", "--output-format", "json", "--no-config"]
    if not downloads:
        argv += ["--only-installed", "--no-python-downloads"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"cannot list the Python interpreters: {exc}") from exc
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()[-2000:]
        raise Unavailable(f"cannot list the Python interpreters: uv python list: {said}")
    found = set()
    for row in json.loads(done.stdout):
        if row.get("implementation") != "cpython" or row.get("variant") != "default":
            continue
        parts = row.get("version_parts") or {}
        found.add((int(parts["major"]), int(parts["minor"])))
    return sorted(found)


def _dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


class Pythons:
    """The Python versions jobs may pin, read with ``uv`` and kept a minute."""

    def __init__(self, *, downloads: bool) -> None:
        self.downloads = downloads
        self._read: tuple[float, list[tuple[int, int]]] = (-_KEEP_S, [])
        self._lock = asyncio.Lock()

    async def available(self) -> list[tuple[int, int]]:
        async with self._lock:
            made, versions = self._read
            if time.monotonic() - made > _KEEP_S:
                versions = await asyncio.to_thread(_listed, self.downloads)
                self._read = (time.monotonic(), versions)
            return versions

    async def check(self, spec: EnvironmentSpec) -> None:
        """Refuse ``spec`` when it pins a Python no agent can have (an ``InvalidInput``
        naming the version and the closest that exists)."""
        wanted = python_pin(spec)
        if wanted is None or spec.user_managed:
            return
        available = await self.available()
        if wanted in available:
            return
        asked = _dotted(wanted)
        if not available:
            raise InvalidInput(f"python {asked} is not available: uv finds no interpreter")
        near = _dotted(closest_python(wanted, available))
        how = "installed or downloadable" if self.downloads else "installed"
        raise InvalidInput(
            f"python {asked} is not available to this workspace's agents; the closest is"
            f" {near} ({how}: {', '.join(map(_dotted, available))})"
        )
