"""Pipeline jobs from YAML in the shape of the Azure ML CLI v2 (``cairn job create --file``).

::

    type: pipeline
    experiment_name: diabetes
    settings: {default_compute: local, continue_on_step_failure: false, force_rerun: false}
    inputs: {raw: {type: uri_folder, path: ./data}, lr: 0.1}
    outputs: {model: {type: uri_folder}}
    jobs:
      prep:
        code: ./src
        command: python prep.py --raw ${{inputs.raw}} --out ${{outputs.data}}
        inputs: {raw: ${{parent.inputs.raw}}}
        outputs: {data: {mode: rw_mount}}
      train:
        component: ./train.yml            # a command component: typed inputs with defaults
        inputs: {data: ${{parent.jobs.prep.outputs.data}}, lr: ${{parent.inputs.lr}}}
        outputs: {model: ${{parent.outputs.model}}}

Each step is a command job (the keys of a command job file, plus ``component``,
``depends_on`` and ``allow_reuse``). Its inputs may be literals, data inputs, the pipeline's
inputs (``${{parent.inputs.x}}``), or another step's output
(``${{parent.jobs.<step>.outputs.<name>}}``, also as a data input's ``path``); its outputs may
be promoted to the pipeline's (``${{parent.outputs.y}}``). Every key is checked, and a binding
that does not hold (an unknown step, output or input, a cycle, a type mismatch, a missing
required component input, an unknown key) is refused with ``InvalidBinding`` naming the YAML
path of the offending key, before anything is uploaded or queued.

An output written in place (``mode: rw_mount``) is a folder the step writes, stored when the
step ends (``upload`` is the same here: a downstream step starts only after that).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.domain.pipeline import check_pipeline
from cairn.errors import InvalidBinding
from cairn.proto.jobs import JobInput, JobOutput, JobSpec
from cairn.proto.pipelines import (
    PipelineOutput,
    PipelineSpec,
    PipelineStep,
    StepInput,
    SubmitPipeline,
)
from cairn.sdk._components import (
    COMMAND_REF,
    ComponentFile,
    Registered,
    binding_error,
    check_component_expressions,
    component_tags,
    load_component_file,
    lookup_components,
    read_yaml,
    refuse_descriptions,
    register_component_file,
    registered_reference,
)
from cairn.sdk._jobfile import (
    DataInput,
    InlineEnvironment,
    Limits,
    Output,
    _data_input,
    _data_output,
    _strip_prefix,
    environment_of,
)
from cairn.sdk._jobs import InputMode, ScriptRunConfig, build_job
from cairn.sdk._refusals import refuse
from cairn.sdk._session import Session, new_id

__all__ = [
    "UNREAD_PIPELINE_KEYS",
    "LoadedPipeline",
    "PipelineFile",
    "Registered",
    "load_component_file",
    "load_pipeline_file",
    "lookup_components",
    "register_component_file",
    "registered_reference",
    "submit_pipeline",
]

#: keys the loader needs not read, and why (every other key is read: honoured or refused)
UNREAD_PIPELINE_KEYS: dict[str, str] = {
    "PipelineFile.type": "the schema accepts only 'pipeline'",
    "StepFile.type": "the schema accepts only 'command'",
    "ComponentFile.type": "the schema accepts only 'command'",
}
_PIPELINE_SCHEMA = "pipelineJob.schema.json"
_COMPONENT_SCHEMA = "commandComponent.schema.json"
_NO_DESCRIPTION = "only the pipeline's own description is kept (a run property)"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PARENT_INPUT = re.compile(rf"^\$\{{\{{\s*parent\.inputs\.({_IDENT})\s*\}}\}}$")
_PARENT_OUTPUT = re.compile(rf"^\$\{{\{{\s*parent\.outputs\.({_IDENT})\s*\}}\}}$")
_STEP_OUTPUT = re.compile(rf"^\$\{{\{{\s*parent\.jobs\.({_IDENT})\.outputs\.({_IDENT})\s*\}}\}}$")
_EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)

_DATA_TYPES = ("uri_folder", "uri_file", "custom_model", "mlflow_model", "triton_model")
#: the modes a step input takes (a bound output's included)
_INPUT_MODES: tuple[Literal["ro_mount", "download"], ...] = ("ro_mount", "download")
_LITERAL_TYPES = ("string", "integer", "number", "boolean")


class PipelineSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    default_compute: str | None = None
    default_datastore: str | None = None
    continue_on_step_failure: bool = False
    force_rerun: bool = False


class StepFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["command"] = "command"
    component: str | None = None
    code: str | None = None
    command: str | None = None
    environment: str | InlineEnvironment | None = None
    compute: str | None = None
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    environment_variables: dict[str, str | int | float] = msgspec.field(default_factory=dict)
    display_name: str | None = None
    description: str | None = None
    depends_on: list[str] = msgspec.field(default_factory=list)
    allow_reuse: bool = True
    limits: Limits | None = None
    name: str | None = None


class PipelineFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    type: Literal["pipeline"]
    display_name: str | None = None
    experiment_name: str | None = None
    description: str | None = None
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    settings: PipelineSettings = msgspec.field(default_factory=PipelineSettings)
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    outputs: dict[str, Output | None] = msgspec.field(default_factory=dict)
    jobs: dict[str, StepFile]
    name: str | None = None


@dataclass
class LoadedStep:
    """One step, checked: its run config (as a command job file's) and its bindings."""

    name: str
    config: ScriptRunConfig
    step_inputs: list[StepInput]
    depends_on: list[str]
    allow_reuse: bool
    display_name: str | None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedPipeline:
    file: PipelineFile
    steps: list[LoadedStep]
    outputs: list[PipelineOutput] = field(default_factory=list)


def _check_expressions(node: Any, where: str) -> None:
    """Expressions only where they mean something: ``${{inputs.x}}``/``${{outputs.x}}`` in a
    step's command, bindings as a step's input or output value (or a data input's path)."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_expressions(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_expressions(value, f"{where}[{i}]")
    elif isinstance(node, str) and "${{" in node:
        parts = where.split(".")
        in_command = len(parts) == 3 and parts[0] == "jobs" and parts[2] == "command"
        bound = len(parts) in (4, 5) and parts[0] == "jobs" and parts[2] in ("inputs", "outputs")
        if in_command:
            rest = COMMAND_REF.sub("", node)
        elif bound and (len(parts) == 4 or parts[4] == "path"):
            ok = _PARENT_INPUT, _PARENT_OUTPUT, _STEP_OUTPUT
            rest = "" if any(r.match(node.strip()) for r in ok) else node
        else:
            rest = node
        if "${{" in rest:
            bad = _EXPRESSION.search(rest)
            shown = bad.group(0) if bad else rest
            raise InvalidBinding.at(where, f"expression {shown!r:.200} is not allowed here")


@dataclass
class _Source:
    """Where a step input's value comes from once bindings are followed."""

    literal: str | int | float | bool | None = None
    data: DataInput | None = None
    step: tuple[str, str] | None = None  # (step, output)
    mode: Literal["ro_mount", "download"] = "ro_mount"
    declared: str | None = None  # the type the step declares for it


@dataclass
class _Step:
    name: str
    where: str
    file: StepFile
    component: ComponentFile | None
    base: Path  # the folder code paths are relative to
    root: Path  # the pipeline file's folder: local input paths are relative to it
    registered: Registered | None = None
    output_types: dict[str, str] = field(default_factory=dict)


def _component(
    step: StepFile, base: Path, where: str, registered: Mapping[str, Registered]
) -> tuple[ComponentFile | None, Path]:
    if step.component is None:
        for key in ("command",):
            if getattr(step, key) is None:
                raise InvalidBinding.at(f"{where}.{key}", "a step needs a command or a component")
        return None, base
    ref = registered_reference(step.component)
    if ref is not None:
        if step.component not in registered:
            raise InvalidBinding.at(
                f"{where}.component",
                f"registered component {step.component!r} was not looked up (load the file"
                " with lookup_components' answer)",
            )
        for key in ("code", "command", "environment"):
            if getattr(step, key) is not None:
                raise InvalidBinding.at(f"{where}.{key}", "the component defines it")
        return registered[step.component].file, base
    path = (base / step.component).resolve()
    doc = read_yaml(path)
    check_component_expressions(doc, f"{where}.component")
    try:
        component = msgspec.convert(doc, ComponentFile)
    except msgspec.ValidationError as exc:
        raise binding_error(exc, f"{where}.component") from exc
    if component.schema is not None and not component.schema.endswith(_COMPONENT_SCHEMA):
        raise InvalidBinding.at(f"{where}.component", "$schema is not a command component's")
    for key in ("code", "command", "environment"):
        if getattr(step, key) is not None:
            raise InvalidBinding.at(f"{where}.{key}", "the component defines it")
    refuse_descriptions(component, f"{where}.component")
    return component, path.parent


def _check_entries(doc: dict[str, Any]) -> None:
    """Each step and pipeline output alone, so that an error names its key (msgspec names a
    mapping's entry ``[...]``)."""
    for key, kind in (("jobs", StepFile), ("outputs", Output)):
        found = doc.get(key)
        if not isinstance(found, dict):
            continue
        for name, value in found.items():
            if value is None and kind is Output:
                continue
            try:
                msgspec.convert(value, kind)
            except msgspec.ValidationError as exc:
                raise binding_error(exc, f"{key}.{name}") from exc


def _parse(
    path: Path, registered: Mapping[str, Registered]
) -> tuple[PipelineFile, dict[str, _Step]]:
    doc = read_yaml(path)
    _check_expressions(doc, "")
    _check_entries(doc)
    try:
        pipeline = msgspec.convert(doc, PipelineFile)
    except msgspec.ValidationError as exc:
        raise binding_error(exc) from exc
    if pipeline.schema is not None and not pipeline.schema.endswith(_PIPELINE_SCHEMA):
        raise InvalidBinding.at("$schema", f"{pipeline.schema!r} is not a pipeline job's schema")
    if pipeline.name is not None:
        raise refuse(str(path), "name", "Cairn makes every run's id; use display_name")
    if not pipeline.jobs:
        raise InvalidBinding.at("jobs", "a pipeline needs at least one step")
    steps: dict[str, _Step] = {}
    for name, step in pipeline.jobs.items():
        where = f"jobs.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise InvalidBinding.at(where, "a step name is [A-Za-z0-9_-]{1,64}")
        if step.name is not None:
            raise refuse(where, "name", "a step is named by its key under jobs")
        if step.description is not None:
            raise refuse(where, "description", _NO_DESCRIPTION)
        component, base = _component(step, path.parent, where, registered)
        steps[name] = _Step(name, where, step, component, base, path.parent)
        if step.component is not None and step.component in registered:
            steps[name].registered = registered[step.component]
    for s in steps.values():
        s.output_types = _output_types(s)
    return pipeline, steps


def _output_types(step: _Step) -> dict[str, str]:
    """Each output's type: the component's, else the step's declaration (uri_folder)."""
    types: dict[str, str] = {}
    if step.component is not None:
        types = {k: v.type for k, v in step.component.outputs.items()}
        for key in step.file.outputs:
            if key not in types:
                raise InvalidBinding.at(
                    f"{step.where}.outputs.{key}", "the component has no such output"
                )
        return types
    for key, value in step.file.outputs.items():
        types[key] = value.get("type", "uri_folder") if isinstance(value, dict) else "uri_folder"
    return types


def _source(pipeline: PipelineFile, steps: dict[str, _Step], where: str, value: Any) -> _Source:
    """Follow ``value`` (a step input's) to its source."""
    if isinstance(value, str) and (m := _PARENT_INPUT.match(value.strip())):
        if m.group(1) not in pipeline.inputs:
            raise InvalidBinding.at(where, f"the pipeline has no input {m.group(1)!r}")
        return _source(pipeline, steps, where, pipeline.inputs[m.group(1)])
    if isinstance(value, str) and (m := _STEP_OUTPUT.match(value.strip())):
        up, out = m.group(1), m.group(2)
        if up not in steps:
            raise InvalidBinding.at(where, f"there is no step {up!r}")
        if out not in steps[up].output_types:
            known = ", ".join(sorted(steps[up].output_types)) or "none"
            raise InvalidBinding.at(where, f"step {up!r} has no output {out!r} (it has: {known})")
        return _Source(step=(up, out))
    if isinstance(value, dict):
        inner = value.get("path")
        if isinstance(inner, str) and (
            _PARENT_INPUT.match(inner.strip()) or _STEP_OUTPUT.match(inner.strip())
        ):
            return _bound_path(pipeline, steps, where, value, inner)
        try:
            data = msgspec.convert(value, DataInput)
        except msgspec.ValidationError as exc:
            raise binding_error(exc, where) from exc
        return _Source(data=data, declared=data.type, mode=data.mode)
    if isinstance(value, (str, int, float, bool)):
        return _Source(literal=value)
    raise InvalidBinding.at(where, "an input is a literal, a data input or a binding")


def _bound_path(
    pipeline: PipelineFile, steps: dict[str, _Step], where: str, value: dict[str, Any], inner: str
) -> _Source:
    """A data input whose ``path`` is a binding: its source, with its ``type`` and ``mode``."""
    found = _source(pipeline, steps, where, inner)
    rest = {k: v for k, v in value.items() if k != "path"}
    unknown = set(rest) - {"type", "mode", "description"}
    if unknown:
        raise InvalidBinding.at(f"{where}.{sorted(unknown)[0]}", "unknown key")
    if "description" in rest:
        raise refuse(where, "description", _NO_DESCRIPTION)
    found.declared = rest.get("type")
    mode = rest.get("mode", found.mode)
    if mode not in _INPUT_MODES:
        raise InvalidBinding.at(
            f"{where}.mode",
            f"{mode!r} is not an input mode (one of {', '.join(_INPUT_MODES)})",
        )
    found.mode = mode
    if found.data is not None and found.declared is not None:
        found.data = msgspec.structs.replace(found.data, type=found.declared)
    return found


def _check_type(where: str, wanted: str | None, source: _Source, steps: dict[str, _Step]) -> None:
    if source.step is not None:
        up, out = source.step
        got = steps[up].output_types[out]
        if got not in ("uri_folder",):
            raise InvalidBinding.at(
                where, f"output {up}.{out} is a {got}: only uri_folder outputs pass to a step"
            )
    elif source.data is not None:
        got = source.data.type
    else:
        literal = source.literal
        got = {bool: "boolean", int: "integer", float: "number"}.get(type(literal), "string")
    if wanted is None or wanted == got:
        return
    if wanted == "number" and got == "integer":
        return
    if wanted == "string" and got in _LITERAL_TYPES:
        return
    raise InvalidBinding.at(where, f"type mismatch: the input is {wanted}, its value a {got}")


def _literal(value: str | int | float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _step_inputs(
    pipeline: PipelineFile, steps: dict[str, _Step], step: _Step
) -> dict[str, _Source]:
    given = step.file.inputs
    sources: dict[str, _Source] = {}
    declared = step.component.inputs if step.component else {}
    for key, value in given.items():
        where = f"{step.where}.inputs.{key}"
        if step.component is not None and key not in declared:
            raise InvalidBinding.at(where, f"the component has no input {key!r}")
        source = _source(pipeline, steps, where, value)
        wanted = declared[key].type if key in declared else source.declared
        if source.step is not None and source.declared is not None:
            wanted = source.declared
        _check_type(where, wanted, source, steps)
        if key in declared and declared[key].type in _DATA_TYPES and source.data:
            source.data = msgspec.structs.replace(source.data, type=declared[key].type)
        sources[key] = source
    for key, spec in declared.items():
        if key in sources:
            continue
        if spec.default is not None:
            sources[key] = _Source(literal=spec.default)
        elif not spec.optional:
            raise InvalidBinding.at(
                f"{step.where}.inputs.{key}",
                f"required by component {step.file.component}: give it a value",
            )
    return sources


def _command(step: _Step, sources: dict[str, _Source], outputs: set[str]) -> str:
    command = step.component.command if step.component else step.file.command
    assert command is not None
    where = f"{step.where}.command"

    def sub(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "outputs":
            if name not in outputs:
                raise InvalidBinding.at(where, f"${{{{outputs.{name}}}}} is not an output")
            return match.group(0)
        if name not in sources:
            raise InvalidBinding.at(where, f"${{{{inputs.{name}}}}} is not an input")
        literal = sources[name].literal
        if literal is None:
            return match.group(0)
        return shlex.quote(_literal(literal))

    return COMMAND_REF.sub(sub, command)


def _step_outputs(
    pipeline: PipelineFile, step: _Step, promoted: dict[str, PipelineOutput]
) -> list[JobOutput]:
    """The step's outputs; an output bound to ``${{parent.outputs.y}}`` takes the pipeline
    output's declaration (and is recorded in ``promoted``)."""
    made: list[JobOutput] = []
    for key, kind in step.output_types.items():
        where = f"{step.where}.outputs.{key}"
        value = step.file.outputs.get(key)
        item: Output | None
        if isinstance(value, str):
            m = _PARENT_OUTPUT.match(value.strip())
            if not m:
                raise InvalidBinding.at(
                    where, "an output is a declaration or ${{parent.outputs.<name>}}"
                )
            if m.group(1) not in pipeline.outputs:
                raise InvalidBinding.at(where, f"the pipeline has no output {m.group(1)!r}")
            if m.group(1) in promoted:
                raise InvalidBinding.at(where, f"pipeline output {m.group(1)!r} is bound twice")
            promoted[m.group(1)] = PipelineOutput(name=m.group(1), step=step.name, output=key)
            item = pipeline.outputs[m.group(1)]
        elif value is None:
            item = None
        else:
            try:
                item = msgspec.convert(value, Output)
            except msgspec.ValidationError as exc:
                raise binding_error(exc, where) from exc
        if item is None:
            item = msgspec.convert({"type": kind}, Output)
        elif item.type != kind and step.component is not None:
            raise InvalidBinding.at(f"{where}.type", f"the component's output is a {kind}")
        made.append(_data_output(key, msgspec.structs.replace(item, mode="upload")))
    return made


def _config(
    pipeline: PipelineFile,
    step: _Step,
    sources: dict[str, _Source],
    outputs: list[JobOutput],
) -> ScriptRunConfig:
    file, component = step.file, step.component
    data_inputs: list[JobInput] = []
    local: dict[str, tuple[Path, InputMode]] = {}
    for key, source in sources.items():
        if source.data is None:
            continue
        made = _data_input(key, source.data, step.root)
        if isinstance(made, JobInput):
            data_inputs.append(made)
        else:
            local[key] = made
    code = component.code if component is not None else (file.code or ".")
    env = component.environment if component is not None else file.environment
    variables = {
        **(component.environment_variables if component else {}),
        **file.environment_variables,
    }
    compute = file.compute or pipeline.settings.default_compute or "local"
    command = _command(step, sources, {o.name for o in outputs})
    config = ScriptRunConfig(
        source_directory=step.base / code,
        command=["/bin/sh", "-c", command],
        compute_target=_strip_prefix(compute),
        environment=environment_of(env, step.base),
        max_run_duration_seconds=file.limits.timeout if file.limits else None,
        environment_variables={k: str(v) for k, v in variables.items()},
    )
    if step.registered is not None:  # its code and environment as they were registered
        config.snapshot = step.registered.snapshot
        config.environment = step.registered.environment
    store = pipeline.settings.default_datastore
    config.job_inputs = data_inputs
    config.job_outputs = [
        msgspec.structs.replace(o, datastore=store)
        if store and o.datastore is None and o.model_type is None
        else o
        for o in outputs
    ]
    config.local_inputs = local
    return config


def load_pipeline_file(
    path: Path, registered: Mapping[str, Registered] | None = None
) -> LoadedPipeline:
    """Read and check a pipeline job file (nothing is uploaded or sent); ``registered``: the
    registered components it names, as :func:`lookup_components` found them."""
    pipeline, steps = _parse(path, registered or {})
    for key, value in pipeline.inputs.items():
        if not isinstance(value, (str, int, float, bool, dict)):
            raise InvalidBinding.at(f"inputs.{key}", "a literal or a data input")
    for key, decl in pipeline.outputs.items():
        if decl is not None and decl.description is not None:
            raise refuse(f"outputs.{key}", "description", _NO_DESCRIPTION)
    promoted: dict[str, PipelineOutput] = {}
    loaded: list[LoadedStep] = []
    for step in steps.values():
        sources = _step_inputs(pipeline, steps, step)
        outputs = _step_outputs(pipeline, step, promoted)
        bound = [
            StepInput(
                name=key,
                step=s.step[0],
                output=s.step[1],
                mode="mount" if s.mode == "ro_mount" else "download",
            )
            for key, s in sources.items()
            if s.step is not None
        ]
        for i, up in enumerate(step.file.depends_on):
            if up not in steps:
                raise InvalidBinding.at(f"{step.where}.depends_on[{i}]", f"there is no step {up!r}")
        allow = step.file.allow_reuse and (
            step.component is None or step.component.is_deterministic
        )
        display = step.file.display_name or (
            step.component.display_name if step.component else None
        )
        loaded.append(
            LoadedStep(
                name=step.name,
                config=_config(pipeline, step, sources, outputs),
                step_inputs=bound,
                depends_on=list(step.file.depends_on),
                allow_reuse=allow,
                display_name=display,
                tags=component_tags(step.component),
            )
        )
    unbound = sorted(set(pipeline.outputs) - set(promoted))
    if unbound:
        raise InvalidBinding.at(f"outputs.{unbound[0]}", "no step's output is bound to it")
    result = LoadedPipeline(file=pipeline, steps=loaded, outputs=list(promoted.values()))
    outlines = {s.name: JobSpec(command=["true"], outputs=s.config.job_outputs) for s in loaded}
    check_pipeline(_spec(result, outlines))  # cycles: the rest was checked on the way
    return result


def _spec(loaded: LoadedPipeline, jobs: dict[str, JobSpec]) -> PipelineSpec:
    settings = loaded.file.settings
    steps = [
        PipelineStep(
            name=s.name,
            compute=s.config.compute_name,
            job=jobs[s.name],
            display_name=s.display_name,
            step_inputs=s.step_inputs,
            depends_on=s.depends_on,
            allow_reuse=s.allow_reuse,
            tags=s.tags,
        )
        for s in loaded.steps
    ]
    return PipelineSpec(
        steps=steps,
        outputs=loaded.outputs,
        continue_on_step_failure=settings.continue_on_step_failure,
        force_rerun=settings.force_rerun,
    )


async def submit_pipeline(ws: Session, loaded: LoadedPipeline) -> SubmitPipeline:
    """Upload what the pipeline's steps need (code snapshots, local inputs) and send the one
    self-contained ``SubmitPipeline``; returns it (it can be stored and sent again under a
    new command and run id)."""
    file = loaded.file
    store = file.settings.default_datastore
    jobs: dict[str, JobSpec] = {}
    envs: dict[str, tuple[str | None, int | None]] = {}
    for step in loaded.steps:
        job, env_name, env_version = await build_job(ws, step.config, datastore=store)
        jobs[step.name], envs[step.name] = job, (env_name, env_version)
    spec = _spec(loaded, jobs)
    steps = [
        msgspec.structs.replace(
            s, environment_name=envs[s.name][0], environment_version=envs[s.name][1]
        )
        for s in spec.steps
    ]
    experiment = file.experiment_name or "default"
    await ws.experiment_id(experiment)  # get-or-create, as a job's submission does
    command = SubmitPipeline(
        command_id=new_id(),
        run_id=new_id(),
        experiment_name=experiment,
        pipeline=msgspec.structs.replace(spec, steps=steps),
        display_name=file.display_name,
        description=file.description or "",
        tags={k: _literal(v) for k, v in file.tags.items()},
    )
    await ws.send(command)
    return command
