"""Azure ML v1's Python pipeline API over the one ``SubmitPipeline`` the YAML pipelines send.

::

    prepped = PipelineData("prepped", datastore=ws.get_default_datastore())
    prep = PythonScriptStep(name="prep", source_directory="src", script_name="prep.py",
                            arguments=["--out", prepped], inputs=[ds.as_named_input("raw")],
                            outputs=[prepped], compute_target="local")
    train = PythonScriptStep(name="train", source_directory="src", script_name="train.py",
                             arguments=["--data", prepped], inputs=[prepped])
    run = Experiment(ws, "pipes").submit(Pipeline(ws, steps=[train]))
    run.wait_for_completion(show_output=True)

The graph comes from the bindings: a step that lists a ``PipelineData`` (or an
``OutputFileDatasetConfig``) in ``outputs`` produces it, a step that takes it in ``inputs`` or
``arguments`` consumes it and runs after. Every step becomes a ``PipelineStep`` whose job is a
``ScriptRunConfig``'s; the pipelines service runs them as for a pipeline file. A
``PipelineParameter`` is its value (the default, or ``pipeline_parameters=`` of the
submission) written into the step's arguments when the pipeline is submitted.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from cairn.domain.pipeline import check_pipeline
from cairn.domain.published import parameter_ref
from cairn.errors import InvalidInput
from cairn.proto.jobs import JobInput, JobOutput, JobSpec
from cairn.proto.paths import validate_run_path
from cairn.proto.pipelines import (
    PipelineSpec,
    PipelineStep,
    PublishPipeline,
    StepInput,
    SubmitPipeline,
)
from cairn.sdk._datastores import Datastore
from cairn.sdk._jobs import Binding, ScriptRunConfig, build_job
from cairn.sdk._pipelineruns import PipelineRun, PublishedPipeline, parameter_text
from cairn.sdk._refusals import inherent, refuses
from cairn.sdk._session import Session, new_id
from cairn.sdk._sync import Experiment, Workspace

__all__ = [
    "OutputFileDatasetConfig",
    "Pipeline",
    "PipelineData",
    "PipelineParameter",
    "PythonScriptStep",
    "pipeline_submission",
]


class PipelineParameter:
    """A value given when the pipeline is submitted (``pipeline_parameters={name: value}``),
    ``default_value`` otherwise; in a step's arguments it is that value."""

    def __init__(self, name: str, default_value: Any) -> None:
        self.name = name
        self.default_value = default_value


def _store_name(store: Datastore | str | None) -> str | None:
    return store.name if isinstance(store, Datastore) else store


class _Produced:
    """Data a step writes and later steps read: its producer is set by the step that lists
    it in ``outputs``."""

    name: str
    producer: PythonScriptStep | None

    def job_output(self) -> JobOutput:
        raise NotImplementedError


class PipelineData(_Produced):
    """A folder one step writes (``outputs``) and later steps read (``inputs`` or
    ``arguments``); stored under ``job-outputs/<run>/<name>`` of ``datastore`` (the default
    datastore when not given) when the writing step ends."""

    @inherent(
        output_mode="the folder the step writes is stored when it ends, mounted or uploaded"
        " alike: that is all a later step can observe",
        is_directory="a step output is a folder",
    )
    def __init__(
        self,
        name: str,
        datastore: Datastore | str | None = None,
        output_mode: str = "mount",
        is_directory: bool | None = None,
    ) -> None:
        if output_mode not in ("mount", "upload"):
            raise InvalidInput(f"PipelineData {name!r}: output_mode is 'mount' or 'upload'")
        self.name = name
        self.datastore = _store_name(datastore)
        self.producer = None

    def job_output(self) -> JobOutput:
        return JobOutput(name=self.name, datastore=self.datastore)

    def __repr__(self) -> str:
        return f"PipelineData(name={self.name!r})"


class OutputFileDatasetConfig(_Produced):
    """A step's output folder stored at ``destination`` (``(datastore, path)``; default: the
    default datastore under ``job-outputs/<run>/<name>``). ``as_upload()`` is the same
    output (stored when the step ends); ``read_delimited_files()`` is it read by a later
    step, as the folder of its files."""

    @refuses(source="a step writes its output folder, named outputs/<name> on the agent")
    def __init__(
        self, name: str | None = None, destination: Any = None, source: str | None = None
    ) -> None:
        self.name = name or f"output_{new_id()[:8]}"
        self.datastore: str | None = None
        self.path = ""
        if destination is not None:
            store, path = destination
            self.datastore = _store_name(store)
            self.path = validate_run_path(str(path).strip("/")) if path else ""
        self.producer = None

    @refuses(
        overwrite="each run writes its own folder unless the destination names one path",
        source_globs="every file the step writes into the folder is stored",
    )
    def as_upload(
        self, overwrite: bool = False, source_globs: list[str] | None = None
    ) -> OutputFileDatasetConfig:
        return self

    @refuses(
        include_path="a later step reads the folder's files",
        set_column_types="the step reads the files as it likes",
        partition_format="the step reads the folder as it is",
    )
    @inherent(
        separator="the step reads the folder's files; it parses them itself",
        header="the step reads the folder's files; it parses them itself",
    )
    def read_delimited_files(
        self,
        include_path: bool = False,
        separator: str = ",",
        header: bool = True,
        partition_format: str | None = None,
        set_column_types: Any = None,
    ) -> OutputFileDatasetConfig:
        return self

    def job_output(self) -> JobOutput:
        return JobOutput(name=self.name, datastore=self.datastore, path=self.path)

    def __repr__(self) -> str:
        return f"OutputFileDatasetConfig(name={self.name!r})"


class PythonScriptStep:
    """One step: ``script_name`` in ``source_directory`` with ``arguments`` on
    ``compute_target`` (a ``runconfig``'s target, environment and variables where not
    given); ``inputs`` are datasets (``as_named_input``), datastore bindings or other steps'
    ``PipelineData``/``OutputFileDatasetConfig``; ``outputs`` what it writes.
    ``allow_reuse=False``: never stand in an earlier run for it."""

    @refuses(
        runconfig_pipeline_params="pass a PipelineParameter in arguments",
        hash_paths="the whole source_directory is the step's snapshot and its reuse key",
        version="a step's reuse key is what it consumes; change the code or inputs instead",
    )
    def __init__(
        self,
        script_name: str,
        name: str | None = None,
        arguments: Sequence[Any] | None = None,
        compute_target: Any = None,
        runconfig: Any = None,
        runconfig_pipeline_params: Any = None,
        inputs: Sequence[Any] | None = None,
        outputs: Sequence[Any] | None = None,
        params: dict[str, Any] | None = None,
        source_directory: str | Path | None = None,
        allow_reuse: bool = True,
        version: str | None = None,
        hash_paths: list[str] | None = None,
    ) -> None:
        self.name = name or Path(script_name).stem
        self.script_name = script_name
        self.arguments = list(arguments or [])
        self.compute_target = compute_target
        self.runconfig = runconfig
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        #: variables ``AML_PARAMETER_<name>``, as Azure ML sets them
        self.params = dict(params or {})
        #: None: the pipeline's ``default_source_directory``, else the current directory
        self.source_given = source_directory is not None
        self.source_directory = Path(source_directory or ".")
        self.allow_reuse = allow_reuse
        #: the tags of the step's run
        self.tags: dict[str, str] = {}
        for item in self.outputs:
            if not isinstance(item, _Produced):
                raise InvalidInput(
                    f"step {self.name!r}: an output is a PipelineData or an"
                    f" OutputFileDatasetConfig, not {type(item).__name__}"
                )
            if item.producer is not None and item.producer is not self:
                raise InvalidInput(
                    f"step {self.name!r}: {item.name!r} is already step"
                    f" {item.producer.name!r}'s output"
                )
            item.producer = self

    def _consumed(self) -> builtins.list[_Produced]:
        """Other steps' outputs this step reads (inputs and arguments), once each."""
        found: dict[int, _Produced] = {}
        for item in [*self.inputs, *self.arguments]:
            if isinstance(item, _Produced) and item.producer is not self:
                found.setdefault(id(item), item)
        return list(found.values())

    def _upstream(self) -> builtins.list[PythonScriptStep]:
        """The steps this one runs after: the producers of what it reads."""
        return [p.producer for p in self._consumed() if p.producer is not None]

    def _config(self, values: dict[str, Any]) -> ScriptRunConfig:
        args: list[str] = []
        for item in self.arguments:
            if isinstance(item, PipelineParameter):
                args.append(str(values[item.name]))
            elif isinstance(item, _Produced):
                kind = "outputs" if item.producer is self else "inputs"
                args.append(f"${{{{{kind}.{item.name}}}}}")
            else:
                args.append(str(item))
        config = ScriptRunConfig(
            source_directory=self.source_directory,
            script=self.script_name,
            compute_target=self.compute_target,
            run_config=self.runconfig,
            environment_variables={f"AML_PARAMETER_{k}": str(v) for k, v in self.params.items()},
        )
        config.arguments = args
        bound: dict[str, JobInput | JobOutput] = {}
        for item in [*self.arguments, *self.inputs]:
            if isinstance(item, Binding) and not isinstance(item, _Produced):
                made = item.job_binding()
                bound.setdefault(made.name, made)
        for item in self.inputs:
            if not isinstance(item, (Binding, _Produced)):
                raise InvalidInput(
                    f"step {self.name!r}: an input is a dataset (as_named_input), a datastore"
                    f" binding or another step's output, not {type(item).__name__}"
                )
        config.job_inputs = [b for b in bound.values() if isinstance(b, JobInput)]
        config.job_outputs = [b for b in bound.values() if isinstance(b, JobOutput)]
        config.job_outputs += [o.job_output() for o in self.outputs]
        return config

    def __repr__(self) -> str:
        return f"PythonScriptStep(name={self.name!r})"


class Pipeline:
    """The steps given and every step they read from (their producers, found through the
    bindings), run as one pipeline run by ``experiment.submit(pipeline)``."""

    @refuses(
        resolve_closure="every step whose output a step reads is part of the pipeline",
    )
    def __init__(
        self,
        workspace: Workspace,
        steps: Sequence[Any],
        description: str | None = None,
        default_datastore: Datastore | str | None = None,
        default_source_directory: str | Path | None = None,
        resolve_closure: bool = True,
    ) -> None:
        self.workspace = workspace
        self.description = description or ""
        self.default_datastore = _store_name(default_datastore)
        self.default_source_directory = default_source_directory
        self.steps = _closure(steps)
        if default_source_directory is not None:
            for step in self.steps:
                if not step.source_given:
                    step.source_directory = Path(default_source_directory)
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise InvalidInput(f"two steps are named {twice[0]!r}; step names are unique")
        self.parameters = _parameters(self.steps)

    def _spec(self, jobs: dict[str, JobSpec], regenerate_outputs: bool) -> PipelineSpec:
        steps = []
        for step in self.steps:
            config = step._config({p: v for p, v in self.parameters.items()})
            step_inputs = [
                StepInput(name=p.name, step=p.producer.name, output=p.name)
                for p in step._consumed()
                if p.producer is not None
            ]
            job = jobs.get(step.name) or JobSpec(command=["true"], outputs=config.job_outputs)
            steps.append(
                PipelineStep(
                    name=step.name,
                    compute=config.compute_name,
                    job=job,
                    step_inputs=step_inputs,
                    depends_on=sorted(
                        {u.name for u in step._upstream()} - {i.step for i in step_inputs}
                    ),
                    allow_reuse=step.allow_reuse,
                    tags=step.tags,
                )
            )
        return PipelineSpec(steps=steps, force_rerun=regenerate_outputs)

    @refuses(
        continue_on_step_failure="publish the pipeline's own setting: a failed step stops it",
    )
    def publish(
        self,
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        continue_on_step_failure: bool | None = None,
    ) -> PublishedPipeline:
        """Store this pipeline (its code uploaded now) as a published pipeline that runs on
        request (``published.submit``, its HTTP endpoint, a schedule), its
        ``PipelineParameter``s filled by each run."""
        ws = self.workspace

        async def publish() -> str:
            stored = await pipeline_submission(ws.core, self, "published", placeholders=True)
            command = PublishPipeline(
                command_id=new_id(),
                pipeline_id=new_id(),
                name=name or "pipeline",
                version=version,
                description=description or self.description,
                parameters={k: parameter_text(v) for k, v in self.parameters.items()},
                submission=msgspec.structs.replace(
                    stored, command_id="published", run_id="published"
                ),
            )
            await ws.core.send(command)
            return command.pipeline_id

        return PublishedPipeline.get(ws, ws._run(publish()))

    def _submit_to(
        self,
        experiment: Experiment,
        *,
        tags: dict[str, str],
        display_name: str | None,
        regenerate_outputs: bool,
        pipeline_parameters: dict[str, Any] | None,
        continue_on_step_failure: bool,
    ) -> PipelineRun:
        """``experiment.submit(pipeline)``: the submission sent; its run at once."""
        ws = experiment.workspace

        async def send() -> str:
            command = await pipeline_submission(
                ws.core,
                self,
                experiment.name,
                parameters=pipeline_parameters,
                regenerate_outputs=regenerate_outputs,
                continue_on_step_failure=continue_on_step_failure,
                tags=tags,
                display_name=display_name,
            )
            await ws.core.send(command)
            return command.run_id

        return PipelineRun(experiment, ws._run(send()))


def _closure(steps: Sequence[Any]) -> list[PythonScriptStep]:
    """The steps and, transitively, the producers of what they read, in the order met (a
    ``ParallelRunStep`` is its workers and its gather step)."""
    found: dict[int, PythonScriptStep] = {}
    pending: list[Any] = []
    for given in steps:
        parts = getattr(given, "steps", None)
        pending += parts() if callable(parts) else [given]
    while pending:
        step = pending.pop(0)
        if not isinstance(step, PythonScriptStep):
            raise InvalidInput(
                f"a step is a PythonScriptStep or a ParallelRunStep, not {type(step).__name__}"
            )
        if id(step) in found:
            continue
        found[id(step)] = step
        pending += step._upstream()
        for p in step._consumed():
            if p.producer is None:
                raise InvalidInput(
                    f"step {step.name!r} reads {p.name!r}, which no step lists in its outputs"
                )
    return list(found.values())


def _parameters(steps: list[PythonScriptStep]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for step in steps:
        for item in step.arguments:
            if isinstance(item, PipelineParameter):
                if item.name in found and found[item.name] != item.default_value:
                    raise InvalidInput(f"pipeline parameter {item.name!r} has two default values")
                found[item.name] = item.default_value
    return found


async def pipeline_submission(
    ws: Session,
    pipeline: Pipeline,
    experiment_name: str,
    *,
    parameters: dict[str, Any] | None = None,
    regenerate_outputs: bool = False,
    continue_on_step_failure: bool = False,
    tags: dict[str, str] | None = None,
    display_name: str | None = None,
    placeholders: bool = False,
) -> SubmitPipeline:
    """The pipeline as one self-contained ``SubmitPipeline`` (code snapshots uploaded, the
    parameters' values written into the steps' arguments, or with ``placeholders``
    ``${{parameters.<name>}}`` for a published pipeline to fill), with fresh ids; not sent."""
    values = dict(pipeline.parameters)
    if placeholders:
        values = {name: parameter_ref(name) for name in values}
    unknown = sorted(set(parameters or {}) - set(values))
    if unknown:
        raise InvalidInput(f"pipeline_parameters: the pipeline has no parameter {unknown[0]!r}")
    values.update(parameters or {})
    check_pipeline(pipeline._spec({}, regenerate_outputs))  # names, bindings, cycles
    jobs: dict[str, JobSpec] = {}
    envs: dict[str, tuple[str | None, int | None]] = {}
    for step in pipeline.steps:
        config = step._config(values)
        config.job_outputs = [
            msgspec.structs.replace(o, datastore=pipeline.default_datastore)
            if o.datastore is None and pipeline.default_datastore
            else o
            for o in config.job_outputs
        ]
        job, env_name, env_version = await build_job(
            ws, config, datastore=pipeline.default_datastore
        )
        jobs[step.name], envs[step.name] = job, (env_name, env_version)
    spec = pipeline._spec(jobs, regenerate_outputs)
    steps = [
        msgspec.structs.replace(
            s, environment_name=envs[s.name][0], environment_version=envs[s.name][1]
        )
        for s in spec.steps
    ]
    spec = msgspec.structs.replace(
        spec, steps=steps, continue_on_step_failure=continue_on_step_failure
    )
    if not placeholders:  # a run now: get-or-create its experiment, as a job's submission does
        await ws.experiment_id(experiment_name)
    return SubmitPipeline(
        command_id=new_id(),
        run_id=new_id(),
        experiment_name=experiment_name,
        pipeline=spec,
        display_name=display_name,
        description=pipeline.description,
        tags=dict(tags or {}),
    )
