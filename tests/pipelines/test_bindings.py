"""Bad pipeline files are refused before anything is uploaded or queued, each with
``InvalidBinding`` naming the YAML path of the offending key; the service refuses the same
bindings in a ``SubmitPipeline`` sent directly."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest

from cairn.errors import InvalidBinding, NotFound
from cairn.proto.assets import ComputeSpec, CreateCompute, DeleteCompute
from cairn.proto.commands import CreateExperiment
from cairn.proto.jobs import JobOutput, JobSpec
from cairn.proto.pipelines import PipelineSpec, PipelineStep, StepInput, SubmitPipeline
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, load_pipeline_file
from tests.pipelines.helpers import TWO_STEPS, write_pipeline

COMPONENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
type: command
name: train
version: 1
display_name: Train
code: ./src
command: python train.py --data ${{inputs.data}} --lr ${{inputs.lr}}
inputs:
  data: {type: uri_folder}
  lr: {type: number, default: 0.1}
outputs:
  model: {type: uri_folder}
"""

WITH_COMPONENT = TWO_STEPS.replace(
    """  train:
    code: ./src
    command: python train.py --data ${{inputs.data}}
    inputs:
      data: ${{parent.jobs.prep.outputs.data}}
""",
    """  train:
    component: ./train.yml
    inputs:
      data: ${{parent.jobs.prep.outputs.data}}
      lr: 3
""",
)

CASES = [
    (
        "unknown step",
        TWO_STEPS.replace("parent.jobs.prep.outputs", "parent.jobs.nope.outputs"),
        "jobs.train.inputs.data",
        "no step 'nope'",
    ),
    (
        "unknown output",
        TWO_STEPS.replace("prep.outputs.data}}", "prep.outputs.nothing}}"),
        "jobs.train.inputs.data",
        "has no output 'nothing'",
    ),
    (
        "a cycle",
        TWO_STEPS.replace(
            "      raw: ${{parent.inputs.raw}}",
            "      raw: ${{parent.jobs.train.outputs.back}}",
        ).replace(
            "      data: ${{parent.jobs.prep.outputs.data}}\n",
            "      data: ${{parent.jobs.prep.outputs.data}}\n    outputs:\n      back: {}\n",
        ),
        "jobs.prep",
        "cycle",
    ),
    (
        "a type mismatch",
        TWO_STEPS.replace(
            "      data: ${{parent.jobs.prep.outputs.data}}",
            "      data: {type: uri_file, path: '${{parent.jobs.prep.outputs.data}}'}",
        ),
        "jobs.train.inputs.data",
        "type mismatch",
    ),
    (
        "a literal for a typed component input",
        WITH_COMPONENT.replace("      lr: 3", "      lr: fast"),
        "jobs.train.inputs.lr",
        "type mismatch",
    ),
    (
        "a missing required component input",
        WITH_COMPONENT.replace("      data: ${{parent.jobs.prep.outputs.data}}\n", ""),
        "jobs.train.inputs.data",
        "required by component",
    ),
    (
        "an input the component lacks",
        WITH_COMPONENT.replace("      lr: 3", "      lr: 3\n      epochs: 2"),
        "jobs.train.inputs.epochs",
        "no input 'epochs'",
    ),
    (
        "an unknown key in a step",
        TWO_STEPS.replace("  train:\n", "  train:\n    resources: {instance_count: 2}\n"),
        "jobs.train.resources",
        "unknown key",
    ),
    (
        "an unknown key in settings",
        TWO_STEPS.replace("default_compute:", "default_computer:"),
        "settings.default_computer",
        "unknown key",
    ),
    (
        "an unknown pipeline input",
        TWO_STEPS.replace("${{parent.inputs.raw}}", "${{parent.inputs.nope}}"),
        "jobs.prep.inputs.raw",
        "no input 'nope'",
    ),
    (
        "an unknown input in a command",
        TWO_STEPS.replace("--data ${{inputs.data}}", "--data ${{inputs.dataset}}"),
        "jobs.train.command",
        "is not an input",
    ),
    (
        "an expression where none is read",
        TWO_STEPS.replace("display_name: two steps", "display_name: ${{parent.inputs.raw}}"),
        "display_name",
        "not allowed here",
    ),
    (
        "an unknown step in depends_on",
        TWO_STEPS.replace("  train:\n", "  train:\n    depends_on: [ghost]\n"),
        "jobs.train.depends_on[0]",
        "no step 'ghost'",
    ),
    (
        "an unbound pipeline output",
        TWO_STEPS.replace(
            "inputs:\n  raw:", "outputs:\n  model: {type: uri_folder}\ninputs:\n  raw:"
        ),
        "outputs.model",
        "no step's output",
    ),
    (
        "a bound output's mode that is none",
        TWO_STEPS.replace(
            "      data: ${{parent.jobs.prep.outputs.data}}",
            "      data: {path: '${{parent.jobs.prep.outputs.data}}', mode: banana}",
        ),
        "jobs.train.inputs.data.mode",
        "'banana' is not an input mode",
    ),
]


@pytest.mark.parametrize(
    ("text", "where", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_bindings_are_refused_by_yaml_path(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = write_pipeline(tmp_path, text, {"train.yml": COMPONENT})
    with pytest.raises(InvalidBinding, match=f"^{re.escape(where)}: .*{re.escape(message)}") as e:
        load_pipeline_file(path)
    assert e.value.path == where


def test_a_component_step_loads_with_its_defaults(tmp_path: Path) -> None:
    path = write_pipeline(
        tmp_path, WITH_COMPONENT.replace("      lr: 3\n", ""), {"train.yml": COMPONENT}
    )
    loaded = load_pipeline_file(path)
    train = next(s for s in loaded.steps if s.name == "train")
    assert train.display_name == "Train"
    assert train.config.argv()[-1] == "python train.py --data ${{inputs.data}} --lr 0.1"
    assert [(b.name, b.step, b.output) for b in train.step_inputs] == [("data", "prep", "data")]


async def test_the_service_refuses_a_bad_binding_and_queues_nothing(
    client: Client, ws: AsyncWorkspace
) -> None:
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="pipes"))
    job = JobSpec(command=["true"], outputs=[JobOutput(name="out")])
    spec = PipelineSpec(
        steps=[
            PipelineStep(name="a", job=job),
            PipelineStep(
                name="b", job=job, step_inputs=[StepInput(name="x", step="a", output="missing")]
            ),
        ]
    )
    run_id = uuid.uuid4().hex[:16]
    cmd = SubmitPipeline(
        command_id=uuid.uuid4().hex, run_id=run_id, experiment_name="pipes", pipeline=spec
    )
    with pytest.raises(InvalidBinding, match=r"^jobs\.b\.inputs\.x: step 'a' has no output"):
        await client.send(cmd)
    with pytest.raises(NotFound):
        await ws.run(run_id).pipeline()
    assert await ws.jobs() == []


async def test_a_resent_submission_is_a_replay_after_its_compute_was_deleted(
    client: Client, ws: AsyncWorkspace
) -> None:
    """A submission whose reply was lost is sent again under its command id; by then a
    step's compute target may be gone. The copy is answered as the replay it is, not refused
    (as the scheduler answers a resent ``SubmitJob``)."""
    await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name="resent"))
    spec = ComputeSpec(kind="cluster", min_nodes=0, max_nodes=1)
    await client.send(CreateCompute(command_id=uuid.uuid4().hex, name="brief", spec=spec))
    pipeline = PipelineSpec(
        steps=[PipelineStep(name="a", job=JobSpec(command=["true"]), compute="brief")]
    )

    def submission() -> SubmitPipeline:
        return SubmitPipeline(
            command_id=uuid.uuid4().hex,
            run_id=uuid.uuid4().hex[:16],
            experiment_name="resent",
            pipeline=pipeline,
        )

    cmd = submission()
    first = await client.send(cmd)
    resent = await client.send(cmd)  # while its compute is there: the ordinary replay
    assert resent.replayed and not first.replayed
    await client.send(DeleteCompute(command_id=uuid.uuid4().hex, name="brief"))
    async with asyncio.timeout(30):  # until the pipelines service has seen the deletion
        while True:
            try:
                await client.send(submission())
            except InvalidBinding as exc:
                assert "jobs.a.compute" in str(exc)
                break
            await asyncio.sleep(0.2)
    again = await client.send(cmd)
    assert again == resent
    with pytest.raises(InvalidBinding, match=r"jobs\.a\.compute"):  # a new one is still refused
        await client.send(submission())
