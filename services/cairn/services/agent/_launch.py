"""Why a job's process did not start: a cause that may pass, or the job's own.

A launch that failed for a cause that may pass (the machine short of processes, memory,
descriptors or disk now, the container engine away, a message to the bus unanswered) is not
the job's failure: its attempt is reported lost, and the scheduler re-queues the run within
its attempt budget (``JobSpec.max_attempts``), each loss a ``RunRequeued`` naming its cause,
the last one's cause in the ``RunFailed`` that ends the budget. Any other cause is the job's
own and fails its run at once, named: a command that is not there or not executable, an
argument the system refuses.

The table applies to errors the agent itself sees: creating pipes and sockets, the fork and
exec that ``subprocess.Popen`` reports (of ``setpriv`` where the agent starts jobs through it,
of the command where it does not), the zygote's answer, the Docker engine's. An error of the
job command's own ``execve`` behind ``setpriv`` or the zygote comes back later as the job's
exit code (126 or 127) and is the job's (``docs/design.md``).
"""

from __future__ import annotations

import errno

from cairn.errors import Unavailable

__all__ = ["PASSING_ERRNOS", "launch_passing"]

#: what the system answers a ``fork``/``exec``, a pipe or a socket with when it is short of
#: something now, rather than refusing the command itself
PASSING_ERRNOS = frozenset(
    {
        errno.EAGAIN,  # no process (RLIMIT_NPROC, pid space) or a resource busy now
        errno.ENOMEM,  # no memory for the new process
        errno.EMFILE,  # this process's descriptors used up (its pipes, the job's socket)
        errno.ENFILE,  # the system's descriptors used up
        errno.ENOBUFS,  # no buffer space for a socket or pipe
        errno.ENOSPC,  # the disk full (the job's folder, its socket's folder)
        errno.EINTR,  # interrupted by a signal
        errno.EBUSY,  # a device or resource busy
        # the executable open for writing: a file another thread just wrote and closed, held
        # open for a moment by a process forked meanwhile (a known fork/exec race)
        errno.ETXTBSY,
    }
)


def launch_passing(exc: BaseException) -> bool:
    """Whether a failure to start a job's process may pass by itself: ``Unavailable``, a
    timeout, a connection error, or an ``OSError`` whose errno is one of
    :data:`PASSING_ERRNOS`. Anything else (``FileNotFoundError`` for a command that is not
    there, ``PermissionError`` for one that is not executable, ``ENOEXEC``, ``E2BIG``, a
    ``ValueError`` for an argument with a NUL byte) is the job's own."""
    if isinstance(exc, (Unavailable, TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and exc.errno in PASSING_ERRNOS
