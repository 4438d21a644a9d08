"""Keeping a process-backend job out of its agent's files, with Linux's Landlock.

A job on the process backend runs as its agent's OS user, so the permissions of the file
system do not keep it from the agent's home (credentials, workspace keys, the NATS store,
other jobs' folders, the read models). Landlock (Linux 5.13 and later, no privileges needed)
lets a process give up access to paths for itself and every process it starts. Between fork
and the job's start the child calls :func:`restrict` with the rules :func:`plan` made in the
agent: full access everywhere except under the protected folders, and inside them only the
job's own folder (full) and what it needs to read (its environment's interpreter, its
mounted inputs).

Landlock grants access *beneath* a path and cannot carve a hole out of a grant, so
:func:`plan` walks down from ``/`` along the way to each protected folder and grants every
sibling on that way instead. The folders on the way themselves get nothing: a job can pass
through them (Landlock does not restrict walking a path) but cannot list them or create
entries in them — which is why its ``TMPDIR`` is a folder of its own.

Standalone (the standard library only): the zygote (``_zygote.py``), which must import
nothing of Cairn, loads it from its own folder.
"""

from __future__ import annotations

import ctypes
import os
import struct

__all__ = ["FULL", "READ", "abi", "open_all", "plan", "restrict", "walls"]

# the generic system call numbers (x86-64 and arm64 share them)
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
#: the rights a rule on a file (not a folder) may carry
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
#: every file-system right of the newest ABI known here; masked to the kernel's by ``restrict``
FULL = (1 << 16) - 1
READ = _EXECUTE | _READ_FILE | _READ_DIR

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no C library to call (not Linux)
    _libc = None


def abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (not Linux, too old,
    switched off)."""
    if _libc is None:
        return 0
    version = _libc.syscall(ctypes.c_long(_CREATE_RULESET), None, 0, _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def _handled(version: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if version >= 2:
        rights |= _REFER
    if version >= 3:
        rights |= _TRUNCATE
    if version >= 5:
        rights |= _IOCTL_DEV
    return rights


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def plan(protected: list[str], allowed: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The rules that keep a process out of ``protected`` (real paths of folders) but for
    ``allowed`` (path, rights), which may lie inside them."""
    return [*walls(protected), *((os.path.realpath(p), rights) for p, rights in allowed)]


def walls(protected: list[str]) -> list[tuple[str, int]]:
    """Full access to everything on the way to ``protected`` but the folders themselves:
    every sibling of a folder on the way. A file's rule carries file rights only (a rule with
    folder rights on a file is refused by the kernel)."""
    walled = sorted({os.path.realpath(p) for p in protected})
    rules: list[tuple[str, int]] = []

    def walk(folder: str) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            # the folder walked is a real path, so an entry is one unless it is a link
            link = entry.is_symlink()
            real = os.path.realpath(entry.path) if link else entry.path
            if any(_inside(real, w) for w in walled):
                continue  # the wall, or a link into it
            if any(_inside(w, real) for w in walled):
                if not link:  # on the way to a protected folder
                    walk(entry.path)
                continue  # a link to a folder on the way: walked by its real path
            try:
                folder_like = entry.is_dir()
            except OSError:
                folder_like = False
            rules.append((entry.path, FULL if folder_like else FULL & _FILE_RIGHTS))

    if not any(w == "/" for w in walled):
        walk("/")
    return rules


def restrict(rules: list[tuple[str, int]], opened: dict[str, int] | None = None) -> None:
    """Confine this process (and whatever it starts) to ``rules``; ``OSError`` when the
    kernel refuses. A path that no longer exists is skipped (less access, never more).
    ``opened``: paths already open (``O_PATH``), used as they are and left open."""
    if _libc is None:
        raise OSError("no C library: cannot use Landlock")
    version = abi()
    if version < 1:
        raise OSError("this kernel has no Landlock")
    handled = _handled(version)
    attr = ctypes.create_string_buffer(struct.pack("=Q", handled))
    ruleset = _libc.syscall(ctypes.c_long(_CREATE_RULESET), attr, ctypes.c_size_t(8), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        beneath = ctypes.create_string_buffer(12)
        add_rule, syscall = ctypes.c_long(_ADD_RULE), _libc.syscall
        ready = opened or {}
        for path, rights in rules:
            fd = ready.get(path, -1)
            if fd < 0:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
            struct.pack_into("=Qi", beneath, 0, rights & handled, fd)
            if syscall(add_rule, ruleset, _RULE_PATH_BENEATH, beneath, 0) != 0:
                # a file given folder rights (it was a folder when planned): file rights only
                struct.pack_into("=Qi", beneath, 0, rights & handled & _FILE_RIGHTS, fd)
                syscall(add_rule, ruleset, _RULE_PATH_BENEATH, beneath, 0)
            if path not in ready:
                os.close(fd)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _libc.syscall(ctypes.c_long(_RESTRICT_SELF), ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def open_all(rules: list[tuple[str, int]]) -> dict[str, int]:
    """An ``O_PATH`` descriptor per rule's path (those that exist), for :func:`restrict` to
    use again and again: the zygote opens the walls once, its children only add them."""
    opened = {}
    for path, _ in rules:
        try:
            opened[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
    return opened
