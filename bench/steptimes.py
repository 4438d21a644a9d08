"""Where a pipeline's time goes, from the timestamps of its events in the log.

``Recorder`` keeps every event envelope of a workspace as it is published (type, aggregate,
timestamp, the fields used here); :func:`breakdown` turns those of one pipeline run into its
critical path (pipeline submitted -> the first wave's decision -> each step's ``SubmitJob``
accepted (``RunSubmitted``) -> claimed by an agent (``RunAssigned``) -> its process about to
start (``RunStarted``, after the snapshot and runtime are ready) -> ``RunCompleted`` (the
process ended, its files uploaded, ``FinishJob`` recorded) -> the orchestrator's
``PipelineStepEnded`` -> the next wave's ``PipelineStepStarted`` -> ``PipelineEnded``) and the
per-step medians. Timestamps are set by the service that appends each event, all on one
machine here.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

__all__ = ["Recorder", "breakdown", "format_breakdown", "job_phases"]

_KEEP = ("step", "run_id", "status")


class Recorder:
    """Every event of one workspace seen on the bus, in arrival order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, env: dict[str, Any]) -> None:
        data = env.get("data") or {}
        self.events.append(
            {
                "type": env["type"],
                "id": env["aggregate_id"],
                "t": datetime.fromisoformat(env["timestamp"]).timestamp(),
                **{k: data[k] for k in _KEEP if k in data},
            }
        )


def _first(events: list[dict[str, Any]], type_: str, agg: str) -> float | None:
    for ev in events:
        if ev["type"] == type_ and ev["id"] == agg:
            return float(ev["t"])
    return None


class _Pipeline:
    """The events of one pipeline run and of its steps' runs, by step."""

    def __init__(self, rec: Recorder, pid: str) -> None:
        mine = [e for e in rec.events if e["id"] == pid]
        self.submitted = _first(mine, "PipelineSubmitted", pid)
        self.ended_at = _first(mine, "PipelineEnded", pid)
        self.step_run: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.reused = 0
        for e in mine:
            if e["type"] in ("PipelineStepStarted", "PipelineStepReused"):
                self.step_run[e["step"]] = e["run_id"]
                self.started[e["step"]] = e["t"]
                self.reused += e["type"] == "PipelineStepReused"
            elif e["type"] == "PipelineStepEnded":
                self.ended[e["step"]] = e["t"]
        runs = set(self.step_run.values())
        self.per_run: dict[str, dict[str, float]] = {r: {} for r in runs}
        for e in rec.events:
            if e["id"] in runs and e["type"] not in self.per_run[e["id"]]:
                self.per_run[e["id"]][e["type"]] = e["t"]

    def at(self, step: str, kind: str) -> float | None:
        return self.per_run.get(self.step_run.get(step, ""), {}).get(kind)

    def span(self, wave: list[str], kind: str, pick: Any) -> float | None:
        return pick((t for s in wave if (t := self.at(s, kind)) is not None), default=None)


def _ms(a: float | None, b: float | None) -> float:
    return round((b - a) * 1000, 1) if a is not None and b is not None else float("nan")


def _wave_path(p: _Pipeline, label: str, wave: list[str], before: float) -> list[Any]:
    """The critical path through one wave: from ``before`` (the last end it waited for)."""
    first_start = min(p.started[s] for s in wave)
    path: list[Any] = [(f"[{label}] ready -> first decided", _ms(before, first_start))]
    last_done = first_start
    if p.reused < len(p.step_run):
        kinds = ("RunSubmitted", "RunAssigned", "RunStarted", "RunCompleted")
        firsts = [p.span(wave, k, min) for k in kinds]
        last_done = p.span(wave, "RunCompleted", max) or first_start
        path.append((f"[{label}] decided -> first SubmitJob accepted", _ms(first_start, firsts[0])))
        path.append((f"[{label}] first accepted -> first claimed", _ms(firsts[0], firsts[1])))
        if len(wave) > 1:
            path.append((f"[{label}] first claimed -> last completed", _ms(firsts[1], last_done)))
        else:
            path.append((f"[{label}] claimed -> process starting", _ms(firsts[1], firsts[2])))
            path.append((f"[{label}] process starting -> completed", _ms(firsts[2], firsts[3])))
    last_end = max(p.ended[s] for s in wave)
    what = "last completed" if p.reused < len(p.step_run) else "first decided"
    path.append((f"[{label}] {what} -> last step ended", _ms(last_done, last_end)))
    return path


def breakdown(rec: Recorder, pid: str, waves: list[list[str]], t_client: float) -> dict[str, Any]:
    """The critical path of pipeline ``pid`` (its steps in ``waves``, each wave after the
    one before) and per-step phase durations in ms; ``t_client`` is the wall clock when the
    client began (reading the file)."""
    p = _Pipeline(rec, pid)
    if p.submitted is None or p.ended_at is None:
        return {}
    path: list[Any] = [("client: file read, SubmitPipeline", _ms(t_client, p.submitted))]
    before = p.submitted
    for wave in waves:
        path += _wave_path(p, wave[0] if len(wave) == 1 else f"{len(wave)} steps", wave, before)
        before = max(p.ended[s] for s in wave)
    path.append(("last step ended -> PipelineEnded", _ms(before, p.ended_at)))
    steps = p.step_run
    phases = {
        "decided -> SubmitJob accepted": [
            _ms(p.started[s], p.at(s, "RunSubmitted")) for s in steps
        ],
        "accepted -> claimed (incl. waiting for a slot)": [
            _ms(p.at(s, "RunSubmitted"), p.at(s, "RunAssigned")) for s in steps
        ],
        "claimed -> process starting (prepare)": [
            _ms(p.at(s, "RunAssigned"), p.at(s, "RunStarted")) for s in steps
        ],
        "process starting -> completed (run, upload, finish)": [
            _ms(p.at(s, "RunStarted"), p.at(s, "RunCompleted")) for s in steps
        ],
        "completed -> step ended (orchestrator)": [
            _ms(p.at(s, "RunCompleted"), p.ended.get(s)) for s in steps
        ],
        "decided -> step ended (a reused step)": [
            _ms(p.started[s], p.ended.get(s)) for s in steps if p.at(s, "RunSubmitted") is None
        ],
    }
    medians = {}
    for k, found in phases.items():
        if known := [x for x in found if x == x]:  # nan: an event the step does not have
            medians[k] = (round(statistics.median(known), 1), round(max(known), 1))
    return {
        "total_ms": _ms(t_client, p.ended_at),
        "path_ms": path,
        "step_median_max_ms": medians,
        "reused_steps": p.reused,
    }


def format_breakdown(name: str, b: dict[str, Any]) -> str:
    if not b:
        return f"{name}: no timeline (events missing)"
    lines = [f"{name}: {b['total_ms']:.0f} ms from the client's start to PipelineEnded"]
    lines += [f"    {label:<52} {v:8.1f} ms" for label, v in b["path_ms"]]
    if b["step_median_max_ms"]:
        lines.append("  per step, median / max:")
        lines += [
            f"    {label:<52} {m:8.1f} / {x:.1f} ms"
            for label, (m, x) in b["step_median_max_ms"].items()
        ]
    return "\n".join(lines)


def job_phases(rec: Recorder, run_ids: list[str]) -> dict[str, tuple[float, float]]:
    """Median and max ms of each job's phases (jobs submitted by hand)."""
    runs = set(run_ids)
    at: dict[str, dict[str, float]] = {r: {} for r in runs}
    for e in rec.events:
        if e["id"] in runs and e["type"] not in at[e["id"]]:
            at[e["id"]][e["type"]] = e["t"]
    pairs = {
        "accepted -> claimed (incl. waiting for a slot)": ("RunSubmitted", "RunAssigned"),
        "claimed -> process starting (prepare)": ("RunAssigned", "RunStarted"),
        "process starting -> completed (run, upload, finish)": ("RunStarted", "RunCompleted"),
    }
    out = {}
    for label, (a, b) in pairs.items():
        found = [(t[b] - t[a]) * 1000 for t in at.values() if a in t and b in t]
        if found:
            out[label] = (round(statistics.median(found), 1), round(max(found), 1))
    return out
