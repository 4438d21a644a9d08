"""The CPython versions ``uv`` finds on this machine (``uv python list --only-installed``)
and, with ``downloads``, those it could download for it (python-build-standalone builds for
this platform, from the list ``uv`` carries: asking needs no network). An agent advertises
what it can give a job that pins a Python; the scheduler checks a pin against that."""

from __future__ import annotations

import json
import subprocess

from cairn.errors import Unavailable

__all__ = ["dotted", "listed_pythons", "parse_dotted"]


def listed_pythons(downloads: bool) -> list[tuple[int, int]]:
    """``(major, minor)`` of every CPython ``uv`` has (or could download), sorted."""
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


def dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def parse_dotted(text: str) -> tuple[int, int] | None:
    """``"3.11"`` as ``(3, 11)``; ``None`` for anything else (an agent's key is data)."""
    major, _, minor = text.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return int(major), int(minor)
