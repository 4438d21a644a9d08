"""Code snapshots: a job's ``source_directory`` as one content-addressed archive.

``pack`` writes a reproducible ``tar.gz`` (sorted members, zeroed times and owners), so an
unchanged directory has an unchanged digest and is uploaded once. What ``.cairnignore`` (or,
without one, ``.gitignore``) excludes at the top of the directory is pruned *before* the walk
descends into it, so an ignored ``data/`` of a million files costs nothing. ``.git`` is never
included. Symlinks that stay inside the tree are kept as links; one that leaves it is an error.

``unpack`` is for the agent, which must not trust an archive. Before anything is written it
refuses absolute names, ``..``, duplicate names, hard links, devices and fifos, setuid, setgid
and sticky bits, archives that expand past a size or member cap, members placed through a
link, and links whose target, resolved through the archive's other links (not read lexically:
CVE-2025-4517), leaves the tree. It then extracts with ``tarfile``'s ``data`` filter on top into
a fresh folder beside the target, renamed into place when complete and removed on refusal.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
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


_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


#: ``tarfile``'s ``data`` filter, on top of the checks above, where the Python has it (3.11.4
#: and later; the Docker backend unpacks with the base image's Python, which may be older)
_HAS_FILTERS = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's path, checked lexically: relative, no ``..``, no NUL or backslash."""
    name = member.name
    if (
        not name
        or name.startswith(("/", "\\"))
        or os.path.isabs(name)
        or "\x00" in name
        or "\\" in name
        or ".." in name.split("/")
    ):
        raise SnapshotRefused(f"archive member {name!r} leaves the target folder")
    clean = posixpath.normpath(name)
    if clean == ".":
        raise SnapshotRefused(f"archive member {name!r} names the target folder itself")
    return clean


def _check(member: tarfile.TarInfo, seen_total: int, max_bytes: int) -> int:
    name = member.name
    if member.islnk():
        raise SnapshotRefused(f"archive member {name!r} is a hard link")
    if member.issym():
        if member.linkname.startswith("/") or "\x00" in member.linkname:
            raise SnapshotRefused(f"archive member {name!r} links out of the target folder")
    elif not (member.isfile() or member.isdir()):
        raise SnapshotRefused(f"archive member {name!r} is a device, fifo or other special file")
    if member.mode & _SPECIAL_BITS:
        raise SnapshotRefused(f"archive member {name!r} has setuid, setgid or sticky bits")
    total = seen_total + max(member.size, 0)
    if total > max_bytes:
        raise SnapshotRefused(f"archive expands past {max_bytes} bytes at {name!r}")
    return total


class _Tree:
    """The tree an archive would make in an empty folder, resolved on paper: no member is
    placed through a link or a file, no name appears twice, and every link's target, followed
    through the archive's other links, stays inside. This is what the files will be, not what
    a lexical reading of one name says (CVE-2025-4517: a chain of links whose names each look
    harmless)."""

    MAX_HOPS = 40  # links followed in one resolution, as Linux allows

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.seen: set[str] = set()

    def add(self, name: str, member: tarfile.TarInfo) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if self.kinds.setdefault(folder, "dir") != "dir":
                raise SnapshotRefused(f"archive member {name!r} is placed through a link or file")
        kind = "dir" if member.isdir() else "link" if member.issym() else "file"
        if self.kinds.setdefault(name, kind) != kind or (kind != "dir" and name in self.seen):
            raise SnapshotRefused(f"archive member {name!r} appears twice")
        self.seen.add(name)
        if kind == "link":
            self.links[name] = member.linkname

    def check_links(self) -> None:
        """Every link resolves inside (the tree is complete: no later member changes it)."""
        for name, target in self.links.items():
            parent = posixpath.dirname(name)
            self._walk(target.split("/"), parent.split("/") if parent else [], name, [0])

    def _walk(self, parts: list[str], at: list[str], name: str, hops: list[int]) -> list[str]:
        """Resolve ``parts`` from folder ``at`` (both relative to the target), following the
        archive's links (``hops`` counts them); refuse a step above the target."""
        where = list(at)
        for part in parts:
            if part in ("", "."):
                continue
            if part == "..":
                if not where:
                    raise SnapshotRefused(f"archive member {name!r} links out of the target")
                where.pop()
                continue
            here = "/".join([*where, part])
            target = self.links.get(here)
            if target is None:
                where.append(part)
                continue
            hops[0] += 1
            if hops[0] > self.MAX_HOPS:
                raise SnapshotRefused(f"archive member {name!r} follows too many links")
            where = self._walk(target.split("/"), where, name, hops)
        return where


def _checked_members(tar: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    tree = _Tree()
    total = 0
    for member in tar:
        name = _member_name(member)
        total = _check(member, total, max_bytes)
        tree.add(name, member)
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise SnapshotRefused(f"archive has more than {MAX_MEMBERS} members")
    tree.check_links()
    return members


def unpack(archive: Path, target: Path, *, max_bytes: int = 4 * MAX_SNAPSHOT_BYTES) -> None:
    """Extract ``archive`` as the folder ``target`` (which must not exist, or be empty).

    Every member is checked first, and the links resolved against the tree the archive
    makes; then it is extracted into a fresh folder beside ``target`` (under the real path of
    its parent), with ``tarfile``'s ``data`` filter on top, and renamed into place only when
    complete. A refusal, or any failure, removes that folder: nothing is left behind."""
    parent = target.parent.resolve()
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / target.name
    if final.is_symlink() or (final.exists() and (not final.is_dir() or any(final.iterdir()))):
        raise InvalidInput(f"cannot unpack into {final}: it exists and is not an empty folder")
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".unpacking", dir=parent))
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = _checked_members(tar, max_bytes)
            if _HAS_FILTERS:
                tar.extractall(scratch, members=members, filter="data")
            else:  # the checks above alone
                tar.extractall(scratch, members=members)
        os.chmod(scratch, 0o755)  # as a folder made by mkdir (mkdtemp makes it private)
        if final.exists():
            final.rmdir()  # the empty folder the caller made
        scratch.rename(final)
    except _FILTER_ERRORS as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise SnapshotRefused(f"archive member refused by the data filter: {exc}") from exc
    except tarfile.TarError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise SnapshotRefused(f"not a readable archive: {exc}") from exc
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def main(argv: list[str]) -> int:
    """``python -m cairn.snapshot ARCHIVE TARGET``: :func:`unpack` in a process of its own
    (the Docker backend runs it in a throwaway container); a refusal is one line on stderr
    and exit status 2."""
    import sys

    if len(argv) != 2:
        print("usage: python -m cairn.snapshot ARCHIVE TARGET", file=sys.stderr)
        return 64
    try:
        unpack(Path(argv[0]), Path(argv[1]))
    except InvalidInput as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
