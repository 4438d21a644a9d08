"""Code snapshots: a job's ``source_directory`` as one content-addressed archive.

``pack`` writes a reproducible ``tar.gz`` (sorted members, zeroed times and owners), so an
unchanged directory has an unchanged digest and is uploaded once. What ``.cairnignore`` (or,
without one, ``.gitignore``) excludes at the top of the directory is pruned *before* the walk
descends into it, so an ignored ``data/`` of a million files costs nothing. ``.git`` is never
included. Symlinks that stay inside the tree are kept as links; one that leaves it is an error.

``unpack`` is for the agent, which must not trust an archive: on top of ``tarfile``'s ``data``
filter it refuses absolute names, ``..``, hard links, links out of the tree, devices and
fifos, and archives that expand past a size or member cap, before anything is written.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import tarfile
from pathlib import Path

import pathspec

from cairn.errors import InvalidInput, PayloadTooLarge

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "SnapshotRefused",
    "digest_of",
    "pack",
    "unpack",
]

MAX_SNAPSHOT_BYTES = 300 * 1024**2
MAX_MEMBERS = 100_000
IGNORE_FILES = (".cairnignore", ".gitignore")


class SnapshotRefused(InvalidInput):
    """An archive member that could write outside the target or bomb the disk."""


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec:
    lines = [".git/"]
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
            break
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _inside(root: Path, link: Path) -> str | None:
    """The link's target relative to its own folder when it resolves inside ``root``."""
    target = os.readlink(link)
    resolved = (link.parent / target).resolve()
    if resolved != root and root not in resolved.parents:
        return None
    return os.path.relpath(resolved, link.parent.resolve())


def _members(root: Path, max_bytes: int) -> list[tuple[str, Path]]:
    spec = _ignore_spec(root)
    found: list[tuple[str, Path]] = []
    total = 0
    for folder, dirs, files in os.walk(root):
        rel_dir = Path(folder).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep_dirs = []
        for d in sorted(dirs):
            if spec.match_file(rel_dir + d + "/"):
                continue  # pruned: never walked
            if (Path(folder) / d).is_symlink():
                files.append(d)  # a link to a folder is archived as a link
                continue
            keep_dirs.append(d)
            found.append((rel_dir + d, Path(folder) / d))
        dirs[:] = keep_dirs
        for f in sorted(files):
            rel = rel_dir + f
            if spec.match_file(rel):
                continue
            path = Path(folder) / f
            if not path.is_symlink() and path.is_file():
                total += path.stat().st_size
                if total > max_bytes:
                    raise PayloadTooLarge(
                        f"the snapshot of {root} passes {max_bytes // 1024**2} MiB at {rel}; "
                        "exclude data and outputs with a .cairnignore file"
                    )
            found.append((rel, path))
    return sorted(found)


def pack(root: Path, *, max_bytes: int = MAX_SNAPSHOT_BYTES) -> bytes:
    """The reproducible archive of ``root``."""
    root = root.resolve()
    if not root.is_dir():
        raise InvalidInput(f"source directory {root} is not a directory")
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):  # compressed as it is written: the archive is held once, not twice
        for rel, path in _members(root, max_bytes):
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_symlink():
                target = _inside(root, path)
                if target is None:
                    raise InvalidInput(f"{rel} is a symlink that leads out of {root}")
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                tar.addfile(info)
            elif path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif path.is_file():
                info.size = path.stat().st_size
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            # sockets, fifos and devices are skipped: they are not source code
    return raw.getvalue()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check(member: tarfile.TarInfo, seen_total: int, max_bytes: int) -> int:
    name = member.name
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts or "\x00" in name:
        raise SnapshotRefused(f"archive member {name!r} leaves the target folder")
    if member.islnk():
        raise SnapshotRefused(f"archive member {name!r} is a hard link")
    if member.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise SnapshotRefused(f"archive member {name!r} links out of the target folder")
    elif not (member.isfile() or member.isdir()):
        raise SnapshotRefused(f"archive member {name!r} is a device, fifo or other special file")
    total = seen_total + max(member.size, 0)
    if total > max_bytes:
        raise SnapshotRefused(f"archive expands past {max_bytes} bytes at {name!r}")
    return total


def unpack(archive: Path, target: Path, *, max_bytes: int = 4 * MAX_SNAPSHOT_BYTES) -> None:
    """Extract ``archive`` into ``target`` after checking every member; nothing is written
    when any member is refused."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members, total = [], 0
            for member in tar:
                total = _check(member, total, max_bytes)
                members.append(member)
                if len(members) > MAX_MEMBERS:
                    raise SnapshotRefused(f"archive has more than {MAX_MEMBERS} members")
            tar.extractall(target, members=members, filter="data")
    except tarfile.TarError as exc:
        raise SnapshotRefused(f"not a readable archive: {exc}") from exc
