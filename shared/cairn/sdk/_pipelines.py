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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from cairn.domain.pipeline import check_pipeline
from cairn.domain.published import parameter_ref
from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.jobs import JobInput, JobOutput, JobSpec
from cairn.proto.paths import validate_run_path
from cairn.proto.pipelines import (
    PipelineSpec,
    PipelineStep,
    PublishPipeline,
    RunPublishedPipeline,
    SetPipelineEndpoint,
    StepInput,
    SubmitPipeline,
)
from cairn.sdk._async_pipelines import pipeline_endpoint, published_pipeline, published_pipelines
from cairn.sdk._datastores import Datastore
from cairn.sdk._jobs import Binding, RunFailedError, ScriptRunConfig, build_job, print_out
from cairn.sdk._refusals import inherent, refuses
from cairn.sdk._session import Session, new_id
from cairn.sdk._sync import Experiment, Run, Workspace

__all__ = [
    "OutputFileDatasetConfig",
    "Pipeline",
    "PipelineData",
    "PipelineEndpoint",
    "PipelineParameter",
    "PipelineRun",
    "PublishedPipeline",
    "PythonScriptStep",
    "StepRun",
]

_TERMINAL = ("Completed", "Failed", "Canceled")


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
        steps: Sequence[PythonScriptStep],
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
                    allow_reuse=step.allow_reuse,
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
                parameters={k: _text(v) for k, v in self.parameters.items()},
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


def _closure(steps: Sequence[PythonScriptStep]) -> list[PythonScriptStep]:
    """The steps and, transitively, the producers of what they read, in the order met."""
    found: dict[int, PythonScriptStep] = {}
    pending = list(steps)
    while pending:
        step = pending.pop(0)
        if not isinstance(step, PythonScriptStep):
            raise InvalidInput(f"a step is a PythonScriptStep, not {type(step).__name__}")
        if id(step) in found:
            continue
        found[id(step)] = step
        pending += [p.producer for p in step._consumed() if p.producer is not None]
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


class StepRun(Run):
    """A step's run inside a pipeline run (``get_steps``, ``find_step_run``)."""

    def __init__(self, experiment: Experiment, run_id: str, step: dict[str, Any]) -> None:
        super().__init__(experiment, run_id)
        self.name: str = step["step"]
        #: the earlier run it stands for when the step was reused, else None
        self.reused_run_id: str | None = step.get("reused_run_id") or None


class PipelineRun(Run):
    """A pipeline's run (``experiment.submit(pipeline)``): its steps are child runs."""

    def _pipeline(self) -> dict[str, Any]:
        return self._ws._run(self._core.pipeline())

    def get_steps(self) -> builtins.list[StepRun]:
        """The steps that started (or were reused), in the pipeline's order."""
        return [
            StepRun(self.experiment, s["run_id"], s)
            for s in self._pipeline()["steps"]
            if s.get("run_id")
        ]

    def find_step_run(self, name: str) -> builtins.list[StepRun]:
        """The runs of step ``name`` (one, or none before it started)."""
        return [s for s in self.get_steps() if s.name == name]

    @inherent(wait_post_processing="a pipeline ends once its steps have, outputs stored")
    def wait_for_completion(
        self,
        show_output: bool = True,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        timeout: float | None = None,
        timeout_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Wait until the pipeline has ended; with ``show_output`` print each step as its
        state changes. Raises ``RunFailedError`` when it did not complete
        (``raise_on_error``), ``TimeoutError`` after ``timeout_seconds`` (Azure ML's name)
        or ``timeout``."""
        limit = timeout_seconds if timeout_seconds is not None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        shown: dict[str, str] = {}
        while True:
            found = self._pipeline()
            if show_output:
                for s in found["steps"]:
                    state = s["status"] + (" (reused)" if s.get("reused_run_id") else "")
                    if shown.get(s["step"]) != state:
                        shown[s["step"]] = state
                        print_out(f"step {s['step']} {state} {s.get('run_id') or ''}\n")
            if found["status"] in _TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"pipeline run {self.id} is still running")
            time.sleep(0.25)
        if show_output:
            print_out(f"pipeline run {self.id} {found['status']}\n")
        if raise_on_error and found["status"] != "Completed":
            raise RunFailedError(
                f"pipeline run {self.id} ended {found['status']}: {found.get('error') or ''}"
            )
        details = self.get_details()
        details["status"] = found["status"]
        return details


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _run_published(
    workspace: Workspace,
    experiment_name: str,
    parameters: dict[str, Any] | None,
    *,
    pipeline_id: str | None = None,
    endpoint: str | None = None,
) -> PipelineRun:
    async def send() -> str:
        await workspace.core.experiment_id(experiment_name)
        command = RunPublishedPipeline(
            command_id=new_id(),
            run_id=new_id(),
            experiment_name=experiment_name,
            pipeline_id=pipeline_id,
            endpoint=endpoint,
            parameters={k: _text(v) for k, v in (parameters or {}).items()},
        )
        await workspace.core.send(command)
        return command.run_id

    run_id = workspace._run(send())
    return PipelineRun(Experiment(workspace, experiment_name), run_id)


class PublishedPipeline:
    """A stored pipeline (``pipeline.publish(...)``): ``id``, ``name``, ``version``,
    ``description``, ``parameters`` (their defaults) and ``endpoint``, the gateway's address
    that runs it (``POST`` with a bearer token)."""

    def __init__(self, workspace: Workspace, data: dict[str, Any]) -> None:
        self.workspace = workspace
        self.id: str = data["id"]
        self.name: str = data["name"]
        self.version: str | None = data.get("version")
        self.description: str = data.get("description") or ""
        self.parameters: dict[str, str] = dict(data.get("parameters") or {})
        settings = workspace.settings
        self.endpoint = (
            f"http://{settings.gateway_host}:{settings.gateway_port}"
            f"/api/w/{workspace.name}/pipelines/{self.id}/runs"
        )

    @staticmethod
    def get(workspace: Workspace, id: str) -> PublishedPipeline:
        return PublishedPipeline(workspace, workspace._run(published_pipeline(workspace.core, id)))

    @staticmethod
    @inherent(active_only="a published pipeline is never disabled: every one is active")
    def list(workspace: Workspace, active_only: bool = True) -> builtins.list[PublishedPipeline]:
        """The workspace's published pipelines, newest first."""
        rows = workspace._run(published_pipelines(workspace.core))
        return [PublishedPipeline(workspace, row) for row in rows]

    def submit(
        self,
        workspace: Workspace,
        experiment_name: str,
        pipeline_parameters: dict[str, Any] | None = None,
    ) -> PipelineRun:
        """A run of it in ``experiment_name`` (its parameters' values, defaults for the rest)."""
        return _run_published(workspace, experiment_name, pipeline_parameters, pipeline_id=self.id)

    def __repr__(self) -> str:
        return f"PublishedPipeline(id={self.id!r}, name={self.name!r}, version={self.version!r})"


class PipelineEndpoint:
    """A name that runs one published pipeline, its default (``add_default`` moves it); its
    HTTP address is ``endpoint``."""

    def __init__(self, workspace: Workspace, data: dict[str, Any]) -> None:
        self.workspace = workspace
        self.name: str = data["name"]
        self.description: str = data.get("description") or ""
        self.default_version: str = data["default_pipeline_id"]
        self.pipelines: builtins.list[str] = list(data["pipelines"])
        settings = workspace.settings
        self.endpoint = (
            f"http://{settings.gateway_host}:{settings.gateway_port}"
            f"/api/w/{workspace.name}/pipeline-endpoints/{self.name}/runs"
        )

    @staticmethod
    def publish(
        workspace: Workspace,
        name: str,
        description: str,
        pipeline: PublishedPipeline | Pipeline,
    ) -> PipelineEndpoint:
        """Endpoint ``name`` over ``pipeline`` (published first when it is a ``Pipeline``),
        its default; refused when the name exists (``add_default`` adds to one)."""
        published = _published(pipeline, name)
        try:
            PipelineEndpoint.get(workspace, name=name)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"pipeline endpoint {name!r} exists; add_default adds to it")
        workspace._run(
            workspace.core.send(
                SetPipelineEndpoint(
                    command_id=new_id(),
                    name=name,
                    pipeline_id=published.id,
                    description=description,
                )
            )
        )
        return PipelineEndpoint.get(workspace, name=name)

    @staticmethod
    @refuses(id="an endpoint is found by its name")
    def get(
        workspace: Workspace, id: str | None = None, name: str | None = None
    ) -> PipelineEndpoint:
        if name is None:
            raise InvalidInput("PipelineEndpoint.get: give name=")
        return PipelineEndpoint(workspace, workspace._run(pipeline_endpoint(workspace.core, name)))

    @refuses(
        pipeline_version="an endpoint runs its default pipeline; run another with its own"
        " PublishedPipeline.submit"
    )
    def submit(
        self,
        experiment_name: str,
        pipeline_parameters: dict[str, Any] | None = None,
        pipeline_version: str | None = None,
    ) -> PipelineRun:
        """A run of the endpoint's default pipeline in ``experiment_name``."""
        return _run_published(
            self.workspace, experiment_name, pipeline_parameters, endpoint=self.name
        )

    def add_default(self, pipeline: PublishedPipeline | Pipeline) -> None:
        """Add ``pipeline`` (published first when it is a ``Pipeline``) and make it the one
        the endpoint runs."""
        published = _published(pipeline, self.name)
        self.workspace._run(
            self.workspace.core.send(
                SetPipelineEndpoint(command_id=new_id(), name=self.name, pipeline_id=published.id)
            )
        )
        self.default_version = published.id
        if published.id not in self.pipelines:
            self.pipelines.append(published.id)

    def __repr__(self) -> str:
        return f"PipelineEndpoint(name={self.name!r}, default={self.default_version!r})"


def _published(pipeline: PublishedPipeline | Pipeline, name: str) -> PublishedPipeline:
    if isinstance(pipeline, Pipeline):
        return pipeline.publish(name=name)
    if not isinstance(pipeline, PublishedPipeline):
        raise InvalidInput(f"an endpoint runs a PublishedPipeline, not {type(pipeline).__name__}")
    return pipeline
