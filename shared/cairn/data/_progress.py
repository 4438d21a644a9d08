"""Progress bars of moving bytes: one policy for every upload and download.

A bar goes to stderr, and only where a person watches: when stderr is a terminal (and the
transfer is large enough to take a moment), or when the caller asks with
``show_progress=True``; ``show_progress=False`` never shows one, and neither does the default
in a script whose stderr is a file or pipe (CI). A bar counts bytes with their total and rate
(tqdm), starts at the bytes already in place (a resumed transfer: files kept from an earlier
try), ends at 100 % when the transfer succeeds, and stays on screen.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["PROGRESS_FROM", "Progress", "interactive", "showing"]

#: the default shows no bar for less than this many bytes: it would be gone before it was read
PROGRESS_FROM = 8 * 1024 * 1024
_DESC_CHARS = 32


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is a terminal a person is looking at."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def showing(show: bool | None, total: int) -> bool:
    """Whether a transfer of ``total`` bytes shows a bar: ``True`` asks for one, ``False``
    refuses it, ``None`` (the default) shows one for a large transfer on a terminal."""
    if total <= 0 or show is False:
        return False
    return show is True or (total >= PROGRESS_FROM and interactive())


def _short(desc: str) -> str:
    return desc if len(desc) <= _DESC_CHARS else "…" + desc[-(_DESC_CHARS - 1) :]


class Progress:
    """A bar of bytes on stderr, or nothing (see :func:`showing`). ``update`` may be called
    from worker threads, and with a negative count to take back the bytes of a failed try.
    As a context manager it ends at the total when the block succeeds, and stays where it
    was when the block raised; either way it is left on screen."""

    def __init__(self, total: int, desc: str, *, show: bool | None, initial: int = 0) -> None:
        self.total = max(total, 0)
        self.shown = showing(show, self.total)
        self._lock = threading.Lock()
        self._bar: tqdm[Any] | None = None
        if self.shown:
            self._bar = tqdm(
                total=self.total,
                initial=min(max(initial, 0), self.total),
                desc=_short(desc),
                unit="B",
                unit_scale=True,
                leave=True,
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.2,
            )

    def update(self, n: int) -> None:
        if self._bar is not None and n:
            with self._lock:
                self._bar.update(n)

    def done(self) -> None:
        """The transfer succeeded: the bar shows the total and closes."""
        if self._bar is not None:
            with self._lock:
                self._bar.update(self.total - self._bar.n)
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.done()
        else:
            self.close()
