"""Sweeps: the best trial of one, and how ``cairn job show`` lays out a sweep's trials."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import cli, json_option, run, show, with_workspace
from cairn.errors import NotFound

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace

__all__ = ["TRIAL_COLUMNS", "sweep_summary", "trial_rows"]

TRIAL_COLUMNS = [
    ("index", "TRIAL"),
    ("run_id", "RUN"),
    ("state", "STATE"),
    ("metric", "METRIC"),
    ("parameters", "PARAMETERS"),
]


def _metric(sweep: dict[str, Any]) -> str:
    return str(sweep["spec"]["objective"]["primary_metric"])


def sweep_summary(sweep: dict[str, Any]) -> dict[str, Any]:
    """The sweep's own lines of ``cairn job show``."""
    spec, best = sweep["spec"], sweep["best_index"]
    limits = spec["limits"]
    return {
        "sweep": sweep["status"] + (f" ({sweep['error']})" if sweep["error"] else ""),
        "objective": f"{spec['objective']['goal']} {_metric(sweep)}",
        "sampling": f"{spec['sampling']['algorithm']} (seed {sweep['seed']})",
        "policy": (spec.get("policy") or {}).get("kind", "none"),
        "trials": f"{len(sweep['trials'])} of {limits['max_total_trials']},"
        f" {limits['max_concurrent_trials']} at once",
        "best trial": "none" if best is None else f"{best} ({sweep['trials'][best]['run_id']})",
    }


def trial_rows(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial: its state ("stopped @N" when its policy stopped it at its N-th
    report), the best value of the primary metric it logged, its parameters."""
    rows = []
    for t in sweep["trials"]:
        state = t["status"]
        if t["stopped"] is not None:
            state += f" (stopped @{t['stopped']['interval']})"
        rows.append(
            {
                "index": t["index"],
                "run_id": t["run_id"],
                "state": state,
                "metric": "" if t["best"] is None else f"{t['best']:g}",
                "parameters": json.dumps(t["parameters"]),
            }
        )
    return rows


@cli.group()
def sweep() -> None:
    """Hyperparameter sweeps: their best trial (create one with 'cairn job create' and a
    type: sweep file; 'cairn job show' lists its trials).

    \b
    Example:
      cairn sweep best RUN_ID
    """


@sweep.command("best")
@click.argument("run_id")
@json_option
def sweep_best(run_id: str, as_json: bool) -> None:
    """Show a sweep's best trial.

    The trial of sweep RUN_ID with the best primary metric (the best value each trial
    logged): its run, parameters and metric. Fails when no trial has logged the metric.

    \b
    Example:
      cairn sweep best RUN_ID --json
    """

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        view = await ws.run(run_id).sweep()
        index = view["best_index"]
        if index is None:  # a running sweep's best so far
            ranked = [t for t in view["trials"] if t["best"] is not None]
            maximize = view["spec"]["objective"]["goal"] == "maximize"
            ranked.sort(key=lambda t: (-t["best"] if maximize else t["best"], t["index"]))
            if not ranked:
                raise NotFound(f"no trial of sweep {run_id} has logged {_metric(view)!r}")
            index = ranked[0]["index"]
        trial = view["trials"][index]
        return {
            "sweep": run_id,
            "sweep_status": view["status"],
            "trial": index,
            "run_id": trial["run_id"],
            "metric": _metric(view),
            "value": trial["best"],
            "parameters": trial["parameters"],
        }

    show(run(with_workspace(go)), as_json)
