"""A schedule whose stored submission is a pipeline's: each fire sends ``pipeline.submit``
with its derived ids, the pipeline records the fire, and a pipeline that claims a fire the
schedule's log does not hold is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.bus import EventStore
from cairn.errors import PermissionDenied
from cairn.proto import subjects
from cairn.proto.commands import CreateExperiment
from cairn.proto.events import PipelineSubmitted
from cairn.proto.jobs import JobSpec, ScheduledBy
from cairn.proto.pipelines import GetPipeline, PipelineSpec, PipelineStep, SubmitPipeline
from cairn.proto.schedules import CreateSchedule, RecurrenceTrigger
from cairn.rpc import Client
from cairn.settings import Settings
from tests.services.test_schedules import START, T0, Clock, cid, replica, submitted, until


def _pipeline(
    experiment: str, run_id: str = "x", scheduled: ScheduledBy | None = None
) -> SubmitPipeline:
    step = PipelineStep(name="a", compute="local", job=JobSpec(command=["true"]))
    return SubmitPipeline(
        command_id=cid() if run_id != "x" else "x",
        run_id=run_id,
        experiment_name=experiment,
        pipeline=PipelineSpec(steps=[step]),
        scheduled=scheduled,
    )


async def test_a_pipeline_schedule_fires_a_pipeline_run(
    client: Client, service_settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    experiment = f"sched-pl-{cid()[:8]}"
    await client.send(CreateExperiment(command_id=cid(), name=experiment))
    trigger = RecurrenceTrigger(frequency="minute", start_time=T0)
    await client.send(
        CreateSchedule(
            command_id=cid(), name="pipes", trigger=trigger, submission=_pipeline(experiment)
        )
    )
    async with replica(service_settings, tmp_path / "state", Clock(START + 5)):
        shown = await until(client, "pipes", submitted(1))
    run_id = shown["fires"][0]["run_id"]
    assert shown["submission"]["type"] == "SubmitPipeline"
    found = (await client.ask(GetPipeline(run_id=run_id))).data
    assert found["run_id"] == run_id and found["experiment_name"] == experiment
    events = await store.read(subjects.event(client.workspace, "pipeline", run_id))
    first = events[0].envelope.data
    assert isinstance(first, PipelineSubmitted)
    assert first.scheduled == ScheduledBy(schedule="pipes", due=START, event_seq=None)

    forged = _pipeline(
        experiment, run_id="forged-pipeline", scheduled=ScheduledBy(schedule="pipes", due=START)
    )
    with pytest.raises(PermissionDenied, match="only the schedules service submits"):
        await client.send(forged)
