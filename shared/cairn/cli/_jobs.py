"""Jobs: create from YAML, list, show, logs, cancel; and the agents that run them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import cli, done, emit, json_option, run, show, with_workspace
from cairn.cli._sweeps import TRIAL_COLUMNS, sweep_summary, trial_rows

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace


def _print_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@cli.group()
def job() -> None:
    """Jobs: create (from a YAML file), list, show, logs, cancel.

    A job is a run that an agent executes on a compute target ('cairn agent --compute NAME'
    serves one).

    \b
    Examples:
      cairn job create --file job.yml --stream
      cairn job list --active
    """


@job.command("create")
@click.option(
    "--file",
    "-f",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the job's YAML file",
)
@click.option(
    "--stream",
    is_flag=True,
    help="print the job's output until it ends; exit 1 unless it completes",
)
@json_option
def job_create(path: Path, stream: bool, as_json: bool) -> None:
    """Submit a command job, a pipeline or a sweep from a YAML file.

    The file has the Azure ML CLI v2 shape: command, code, environment, compute, inputs,
    outputs, experiment_name, display_name, tags, environment_variables, limits; or
    type: pipeline with settings, inputs, outputs and jobs (steps, bound by
    ${{parent.jobs.<step>.outputs.<name>}}); or type: sweep, a trial (code, command,
    environment) with search_space, sampling_algorithm, objective, early_termination and
    limits. Prints the new run's id (with --stream: the job's output, or each step's state
    and output, then waits for its end; a sweep's parent run has no output of its own).

    \b
    Example:
      cairn job create --file job.yml --stream
    """
    from cairn.cli._pipelines import create_pipeline, is_pipeline_file
    from cairn.sdk import read_job_file

    if is_pipeline_file(path):
        create_pipeline(path, stream, as_json)
        return
    spec, config = read_job_file(path)

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        tags = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in spec.tags.items()}
        exp = await ws.experiment(spec.experiment_name or "default")
        submitted = await exp.submit(config, tags=tags, display_name=spec.display_name)
        if spec.description:  # Azure keeps it as the run's description: a run property here
            await submitted.add_properties({"description": spec.description})
        if not stream:
            return {"run_id": submitted.id, "status": "Queued"}
        if as_json:  # nothing but the JSON; a missing agent is still logged
            return await submitted.wait_for_completion(show=False)
        click.echo(f"run {submitted.id} queued on {config.compute_name}", err=True)
        return await submitted.wait_for_completion(out=_print_out, show=True)

    result = run(with_workspace(go))
    if as_json:
        emit(result, True, [])
    elif not stream:
        click.echo(result["run_id"])
    elif result["status"] != "Completed":  # the display's last line said how it ended
        sys.exit(1)


_JOB_COLUMNS = [
    ("run_id", "RUN"),
    ("experiment_name", "EXPERIMENT"),
    ("compute", "COMPUTE"),
    ("status", "STATUS"),
    ("attempt", "ATTEMPT"),
    ("agent_id", "AGENT"),
    ("priority", "PRIO"),
    ("command", "COMMAND"),
]


@job.command("list")
@click.option("--compute", default=None, help="only the jobs sent to this compute target")
@click.option("--active", is_flag=True, help="only queued and running jobs")
@click.option("--limit", default=100, show_default=True, help="at most this many jobs")
@json_option
def job_list(compute: str | None, active: bool, limit: int, as_json: bool) -> None:
    """List jobs, newest first.

    One line per job: run, experiment, compute, status, attempt, agent, priority, command.

    \b
    Example:
      cairn job list --compute gpu --active
    """
    rows = run(with_workspace(lambda ws: ws.jobs(compute=compute, active=active, limit=limit)))
    emit(rows, as_json, _JOB_COLUMNS)


@job.command("show")
@click.argument("run_id")
@json_option
def job_show(run_id: str, as_json: bool) -> None:
    """Show one job, a pipeline with its steps, or a sweep with its trials.

    The run RUN_ID with its job: compute, attempts, agent, command, status and error; a
    pipeline run with its steps: status, duration, run and the run a reused step reuses. For a
    sweep's parent run: its state and best trial, then one line per trial with its
    parameters, primary metric (the best it logged) and state, "stopped @N" marking a trial
    its policy stopped at its N-th report.

    \b
    Example:
      cairn job show RUN_ID
    """

    from cairn.cli._pipelines import show_pipeline

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        job_run = ws.run(run_id)
        details = await job_run.details()
        if (details.get("properties") or {}).get("run_type") == "pipeline":
            return {**details, "pipeline": await job_run.pipeline()}
        if details.get("controller") == "sweep":
            return {**details, "sweep": await job_run.sweep()}
        return {**details, **await job_run.job()}

    record = run(with_workspace(go))
    pipeline = record.pop("pipeline", None)
    if pipeline is not None:
        show_pipeline(record, pipeline, as_json)
        return
    sweep = record.pop("sweep", None)
    if as_json or sweep is None:
        show({**record, "sweep": sweep} if sweep is not None else record, as_json)
        return
    show({**record, **sweep_summary(sweep)}, False)
    click.echo("")
    emit(trial_rows(sweep), False, TRIAL_COLUMNS)


@job.command("logs")
@click.argument("run_id")
@click.option("--follow", "-f", "follow_", is_flag=True, help="keep printing until the job ends")
def job_logs(run_id: str, follow_: bool) -> None:
    """Print a job's output.

    The output of job RUN_ID so far (from the LOGS stream); with --follow until it ends.

    \b
    Example:
      cairn job logs RUN_ID --follow
    """
    if follow_:

        async def wait(ws: AsyncWorkspace) -> dict[str, Any]:
            return await ws.run(run_id).wait_for_completion(out=_print_out, show=True)

        run(with_workspace(wait))
    else:
        run(with_workspace(lambda ws: ws.run(run_id).print_logs(_print_out)))


@job.command("cancel")
@click.argument("run_id")
@click.option(
    "--reason",
    default="canceled from the command line",
    show_default=True,
    help="why, recorded with the cancel",
)
@json_option
def job_cancel(run_id: str, reason: str, as_json: bool) -> None:
    """Cancel a job.

    Cancels job RUN_ID: a queued one never runs; a running one is stopped by its agent.

    \b
    Example:
      cairn job cancel RUN_ID --reason "wrong learning rate"
    """
    run(with_workspace(lambda ws: ws.run(run_id).cancel(reason)))
    done(as_json, {"run_id": run_id, "cancel_requested": True}, f"cancel of {run_id} recorded")
