"""What a person waiting on a submitted run sees besides the job's output.

:class:`Whereabouts` says where the run is, in words: its place in its compute target's queue,
or — when no live agent serves that target (agents publish heartbeats in the ``cairn_agents``
bucket, as ``cairn agent list`` reads them) — which target and how to start an agent for it;
then the agent preparing or running it. :class:`WaitDisplay` shows that on stderr: on a
terminal as one line kept up to date until the job's output begins (the missing agent as a
line of its own, which stays), elsewhere only what is worth a line of a log (a new queue
position, the missing agent); and, when the run has ended, a last line with its id and
status. Where nothing is shown (a script's plain
``wait_for_completion()`` outside a terminal), the missing agent is still logged once as a
warning: a wait that can never end says why.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

from cairn import bus
from cairn.data import interactive
from cairn.errors import CairnError, NotFound
from cairn.log import get_logger
from cairn.proto.jobs import GetJob, ListJobs
from cairn.sdk._session import Session

__all__ = ["Note", "WaitDisplay", "Whereabouts", "final_line", "live_agents", "no_agent_hint"]

log = get_logger("cairn.sdk")
#: a run that waits this long in the queue gets a look at the queue and the agents
QUEUED_GRACE_S = 1.0
#: and another look this often while it waits
CHECK_EVERY_S = 2.0
_QUEUE_LIMIT = 10_000
_ERROR_CHARS = 300


def no_agent_hint(compute: str) -> str:
    return f"no agent serves compute {compute} — start one with `cairn agent --compute {compute}`"


async def live_agents(session: Session) -> list[dict[str, Any]]:
    """The agents with a live heartbeat that run this workspace's jobs (an agent that does
    not say which workspace it serves counts for every one)."""
    return await bus.live_agents(session.conn, session.name)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Note(NamedTuple):
    """Where a run is: ``text`` for a terminal's live line; ``line``, when there is something
    worth a line of a log (its place in the queue, a missing agent); ``alert``, when that line
    is something to act on (it stays on a terminal, and is logged where nothing shows)."""

    text: str
    line: str | None = None
    alert: bool = False


class Whereabouts:
    """Where run ``run_id`` is (``describe``), asking the scheduler and the agents' bucket
    only while it waits in the queue, at most every ``CHECK_EVERY_S``."""

    def __init__(self, session: Session, run_id: str) -> None:
        self.session, self.run_id = session, run_id
        self.status = ""
        self.since = 0.0
        self.checked_at = 0.0
        self.note = Note("")
        self._job: dict[str, Any] | None = None
        self._agents_readable = True

    async def describe(self, status: str) -> Note:
        """Where the run in ``status`` is now."""
        now = time.monotonic()
        if status != self.status:
            self.status, self.since, self.checked_at = status, now, 0.0
            self.note = Note(status.lower())
            with contextlib.suppress(CairnError, TimeoutError):
                self._job = await self._get_job()
                self.note = Note(self._where())
        if status != "Queued" or not self._job or now - self.since < QUEUED_GRACE_S:
            return self.note
        if now - self.checked_at >= CHECK_EVERY_S:
            self.checked_at = now
            with contextlib.suppress(CairnError, TimeoutError):
                self.note = await self._queue_note(str(self._job.get("compute") or "local"))
        return self.note

    async def _get_job(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = (await self.session.client.ask(GetJob(run_id=self.run_id))).data
        except NotFound:  # a run started by a script, not a job
            return {}
        return data

    def _where(self) -> str:
        job, status = self._job or {}, self.status
        compute, agent = job.get("compute"), job.get("agent_id")
        if status == "Queued" and compute:
            return f"queued on compute {compute}"
        if status in ("Preparing", "Running") and agent:
            attempt = int(job.get("attempt") or 1)
            again = f" (attempt {attempt})" if attempt > 1 else ""
            return f"{status.lower()} on agent {agent}{again}"
        if status == "CancelRequested":
            return "canceling"
        return status.lower()

    async def _agents_of(self, compute: str) -> list[dict[str, Any]] | None:
        """The live agents of ``compute``, or None where this connection cannot read them (a
        job's own, through its agent)."""
        if not self._agents_readable:
            return None
        try:
            agents = await live_agents(self.session)
        except Exception:  # no permission or no bucket: say nothing rather than guess
            self._agents_readable = False
            return None
        return [a for a in agents if a.get("compute") == compute]

    async def _queue_note(self, compute: str) -> Note:
        agents = await self._agents_of(compute)
        if agents is not None and not agents:
            return Note(f"queued on compute {compute}: no agent", no_agent_hint(compute), True)
        q = ListJobs(compute=compute, active=True, limit=_QUEUE_LIMIT)
        rows = (await self.session.client.ask(q)).data
        queued = sorted(
            (r for r in rows if r.get("status") == "Queued"),
            key=lambda r: (-int(r.get("priority") or 0), int(r.get("seq") or 0)),
        )
        ids = [r.get("run_id") for r in queued]
        where = f"queued on compute {compute}"
        if self.run_id in ids:
            where += f": position {ids.index(self.run_id) + 1} of {len(ids)}"
        if agents:  # slots taken: the scheduler's view (an agent's heartbeat may be old)
            busy = sum(1 for r in rows if r.get("status") != "Queued")
            free = max(sum(int(a.get("slots") or 0) for a in agents) - busy, 0)
            where += f" ({_plural(len(agents), 'agent')}, {_plural(free, 'free slot')})"
        return Note(where, where)


def final_line(details: dict[str, Any]) -> str:
    """``Run <id>: <status>``, and for a run that did not complete the end of its error."""
    line = f"Run {details.get('run_id', '?')}: {details.get('status', '?')}"
    error = str(details.get("error") or "").strip()
    if error and details.get("status") != "Completed":
        last = error.splitlines()[-1].strip()
        if len(last) > _ERROR_CHARS:
            last = last[: _ERROR_CHARS - 1] + "…"
        line += f" — {last}"
    return line


def _elapsed(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class WaitDisplay:
    """Shows a wait on ``stream`` (stderr). ``show``: the person asked to see the wait
    (``show_output=True``); without it the wait shows only on a terminal. A display that shows
    nothing still logs a missing agent once."""

    def __init__(
        self,
        run_id: str,
        *,
        show: bool = False,
        stream: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        self.run_id = run_id
        self.stream = stream if stream is not None else sys.stderr
        self.live = interactive(self.stream) if live is None else live
        self.shown = show or self.live
        self.started = time.monotonic()
        self.on_screen = False  # a live line is drawn and not yet ended
        self.output_began = False
        self._text = ""
        self._drawn_at = 0.0
        self._last_line = ""
        self._warned = False
        self._mid_line = False

    def note(self, note: Note) -> None:
        """Where the run is now (called on every poll; draws only what changed, and the
        elapsed time once a second)."""
        if not self.shown:
            if note.alert and note.line and not self._warned:
                self._warned = True
                log.warning("run_waits_for_an_agent", run_id=self.run_id, detail=note.line)
            return
        if not self.live:
            if note.line and note.line != self._last_line:
                self._last_line = note.line
                self._write(f"Run {self.run_id}: {note.line}\n")
            return
        if self.output_began:  # the job's output has the screen now
            return
        now = time.monotonic()
        if note.alert and note.line and note.line != self._last_line:  # it stays, above
            self._last_line = note.line
            self._write(f"\r\x1b[KRun {self.run_id}: {note.line}\n")
            self.on_screen, self._drawn_at = False, 0.0
        if note.text == self._text and now - self._drawn_at < 1.0 and self.on_screen:
            return
        self._text, self._drawn_at = note.text, now
        line = f"Run {self.run_id}: {note.text} · {_elapsed(now - self.started)}"
        width = shutil.get_terminal_size().columns - 1  # a wrapped line would not redraw
        if len(line) > width > 0:
            line = line[: width - 1] + "…"
        self._write(f"\r\x1b[K{line}")
        self.on_screen = True

    def wrap(self, out: Callable[[str], None]) -> Callable[[str], None]:
        """``out`` for the job's output: the live line is left on screen, ended, before the
        first of it, and not drawn again."""

        def wrapped(text: str) -> None:
            if not self.output_began:
                self.output_began = True
                self._end_line()
            if text:
                self._mid_line = not text.endswith("\n")
            out(text)

        return wrapped

    def end(self, details: dict[str, Any] | None) -> None:
        """The wait is over. For a run that ended (``details``) the live line goes (it said
        where the run was, not how it ended) and a last line says how; a wait cut short
        leaves the live line as it was."""
        if details is None:
            self._end_line()
            return
        if self.on_screen:
            self._write("\r\x1b[K")
            self.on_screen = False
        if self.shown:
            start = "\n" if self._mid_line else ""  # the output's last line was left open
            self._write(start + final_line(details) + "\n")

    def _end_line(self) -> None:
        if self.on_screen:
            self._write("\n")
            self.on_screen = False

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            self.stream.write(text)
            self.stream.flush()
