"""How the studio's run pages show values: times, durations, metric numbers, file sizes."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

__all__ = ["duration", "number", "short_time", "size", "timeline"]


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def duration(run: dict[str, Any], now: datetime | None = None) -> str:
    """How long the run ran (so far, while it runs): ``1h 02m``, ``3m 05s``, ``12.4s``."""
    start = _when(run.get("start_time"))
    if start is None:
        return ""
    end = _when(run.get("end_time")) or (now or datetime.now(UTC))
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def short_time(text: str | None) -> str:
    moment = _when(text)
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def number(value: Any) -> str:
    """A metric value as a table shows it: floats to 6 significant digits."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def size(n: int) -> str:
    step = 1024.0
    amount = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < step or unit == "GiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= step
    return f"{n} B"


def timeline(run: dict[str, Any], job: dict[str, Any] | None) -> list[dict[str, str]]:
    """The moments the run record (and its job's, when it is one) holds, in order."""
    steps = [("Created", run.get("created_at"))]
    if job is not None and job.get("submitted_at"):
        steps.append(("Queued", _from_epoch(job["submitted_at"])))
    steps.append(("Started", run.get("start_time")))
    if run.get("end_time"):
        steps.append((str(run.get("status")), run.get("end_time")))
    return [{"label": label, "at": short_time(at)} for label, at in steps if at]


def _from_epoch(value: Any) -> str | None:
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        return datetime.fromtimestamp(float(value), UTC).isoformat()
    return None
