"""Command jobs from YAML in the shape of the Azure ML CLI v2 (``cairn job create --file``).

::

    type: command
    code: ./src
    command: python train.py --reg_rate ${{inputs.reg_rate}} --out ${{outputs.model}}
    environment: sklearn-env@latest  # or name:version, azureml:..., inline {image, conda_file}
    compute: local                      # or azureml:cpu-cluster
    inputs: {reg_rate: 0.01}
    outputs: {model: {type: uri_folder}}
    experiment_name: diabetes
    display_name: first try

Every key is checked: an unknown one is an error that names it. ``${{inputs.x}}`` becomes the
literal value (shell-quoted) or, for a data input (``{type: uri_folder, path: ...}``: a
dataset ``cairn:name@version`` / ``azureml:name:version``, a datastore path
``azureml://datastores/<name>/paths/<path>``, or a local path uploaded with the job), the
local path the agent made it; ``${{outputs.x}}`` becomes ``outputs/x``, uploaded with the
run's files and to its datastore path (registered as dataset ``name`` when given). Paths are
relative to the YAML file.

Those two are the only expressions: any other ``${{...}}`` (``${{inputs.a.b}}``,
``${{parent.jobs...}}``, one outside ``command``, an unclosed ``${{``) is refused naming its
YAML path, so nothing unresolved reaches the job's shell.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import msgspec
import yaml

from cairn.data import check_url, is_url
from cairn.domain.environment import parse_reference
from cairn.errors import InvalidInput
from cairn.proto.jobs import JobInput, JobOutput
from cairn.proto.paths import validate_run_path
from cairn.sdk._assets import Environment
from cairn.sdk._jobs import InputMode, ScriptRunConfig
from cairn.sdk._refusals import refuse, refuses

__all__ = [
    "UNREAD_KEYS",
    "InlineEnvironment",
    "Input",
    "JobFile",
    "environment_of",
    "job_from_doc",
    "load_job_doc",
    "load_job_file",
    "load_yaml_as",
    "read_yaml",
]

_T = TypeVar("_T")

#: keys the loader needs not read, and why (every other key is read: honoured or refused)
UNREAD_KEYS: dict[str, str] = {
    "JobFile.type": "the schema accepts only 'command'",
}
_COMMAND_SCHEMA = "commandJob.schema.json"
_NO_DESCRIPTION = "only the job's own description is kept (a run property); write a YAML comment"

_REF = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)


class InlineEnvironment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    image: str | None = None
    conda_file: str | None = None
    name: str | None = None
    description: str | None = None


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    timeout: float | None = None


class Output(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Written by the job under ``outputs/<name>``; uploaded to ``path`` (a datastore URI,
    default a folder of the run's own) and registered as dataset ``name`` when given. A model
    output (``custom_model``, ``mlflow_model``, ``triton_model``) stays the run's files and,
    named, is registered from the run as the next version of model ``name``."""

    type: Literal["uri_folder", "uri_file", "custom_model", "mlflow_model", "triton_model"] = (
        "uri_folder"
    )
    path: str | None = None
    name: str | None = None
    version: str | int | None = None
    mode: Literal["upload", "rw_mount"] = "upload"
    description: str | None = None


class DataInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A dataset (``cairn:name@version``, ``azureml:name:version``), a datastore path
    (``azureml://datastores/<name>/paths/<path>``), a URL (``https://`` a file; ``s3://``
    or an fsspec scheme a file or, as ``uri_folder``, a folder) or a local path (uploaded
    with the job); a model input (``custom_model``, ``mlflow_model``) a registered model version
    (``azureml:<name>:<version>``, ``azureml:<name>@<alias>``), its files downloaded."""

    type: Literal["uri_folder", "uri_file", "custom_model", "mlflow_model"]
    path: str
    mode: Literal["ro_mount", "download"] = "ro_mount"
    description: str | None = None


class JobFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    type: Literal["command"] = "command"
    code: str = "."
    command: str
    environment: str | InlineEnvironment | None = None
    compute: str = "local"
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    outputs: dict[str, Output | None] = msgspec.field(default_factory=dict)
    experiment_name: str | None = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    environment_variables: dict[str, str | int | float] = msgspec.field(default_factory=dict)
    limits: Limits | None = None
    name: str | None = None
    #: the workspace secrets the job may read (``run.get_secret``); a Cairn key
    secrets: list[str] = msgspec.field(default_factory=list)


def _refuse_expressions(node: Any, where: str) -> None:
    """Refuse every ``${{`` in the document outside ``command`` (and, in ``command``, every
    one that is not ``${{inputs.<name>}}`` or ``${{outputs.<name>}}``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            _refuse_expressions(key, path)
            _refuse_expressions(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _refuse_expressions(value, f"{where}[{i}]")
    elif isinstance(node, str) and "${{" in node:
        allowed = where == "command"
        for found in _EXPRESSION.finditer(node):
            if not (allowed and _REF.fullmatch(found.group(0))):
                raise InvalidInput(
                    f"{where}: unknown expression {found.group(0)!r:.200}; the only ones are"
                    " ${{inputs.<name>}} and ${{outputs.<name>}}, in command"
                )
        if "${{" in _EXPRESSION.sub("", node):
            raise InvalidInput(f"{where}: an unclosed '${{{{' in {node!r:.200}")


def _strip_prefix(ref: str) -> str:
    return ref.removeprefix("azureml:").removeprefix("cairn:")


def environment_of(value: str | InlineEnvironment | None, base: Path) -> str | Environment | None:
    """A file's ``environment``: a reference (Azure's curated names become Cairn's), or an
    inline one (``image``, ``conda_file`` relative to ``base``)."""
    if value is None:
        return None
    if not isinstance(value, str) and value.description is not None:
        raise refuse("environment", "description", _NO_DESCRIPTION)
    if isinstance(value, str):  # Azure's curated names become Cairn's curated environments
        name, version = parse_reference(value)
        if version is None:
            return name
        env = Environment(name)
        env.version = version
        return env
    if value.conda_file is not None:
        env = Environment.from_conda_specification(value.name or "inline", base / value.conda_file)
    else:
        env = Environment(value.name or "inline")
    env.docker.base_image = value.image
    return env


def _command(job: JobFile, data: set[str]) -> str:
    """Literal inputs substituted; data inputs and outputs left for the agent, which knows
    where it put them."""

    def sub(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "inputs":
            if name not in job.inputs:
                raise InvalidInput(
                    f"the command uses ${{{{inputs.{name}}}}}, which is not an input"
                )
            if name in data:
                return match.group(0)
            value = job.inputs[name]
            return shlex.quote(str(value).lower() if isinstance(value, bool) else str(value))
        if name not in job.outputs:
            raise InvalidInput(f"the command uses ${{{{outputs.{name}}}}}, which is not an output")
        return match.group(0)

    return _REF.sub(sub, job.command)


_DATASTORE_URI = re.compile(r"^(?:azureml|cairn)://datastores/([^/]+)/paths/(.*)$")
_DATASET_REF = re.compile(r"^(?:azureml|cairn):([^:@/][^:@]*)(?:[:@](latest|\d+))?$")


_MODEL_REF = re.compile(r"^(?:azureml|cairn):([^:@/]+)(?::(latest|\d+)|@([A-Za-z0-9_.-]+))?$")


def _data_input(name: str, item: DataInput, base: Path) -> JobInput | tuple[Path, InputMode]:
    """A job input, or a local path to upload (with its mode)."""
    if item.description is not None:
        raise refuse(f"inputs.{name}", "description", _NO_DESCRIPTION)
    mode: InputMode = "mount" if item.mode == "ro_mount" else "download"
    if item.type in ("custom_model", "mlflow_model"):
        if not (m := _MODEL_REF.match(item.path)):
            raise InvalidInput(
                f"inputs.{name}: a model input is azureml:<name>:<version> or"
                " azureml:<name>@<alias>"
            )
        version = None if m.group(2) in (None, "latest") else int(m.group(2))
        return JobInput(name=name, mode=mode, model=m.group(1), version=version, alias=m.group(3))
    if m := _DATASTORE_URI.match(item.path):
        return JobInput(name=name, mode=mode, datastore=m.group(1), path=m.group(2))
    if m := _DATASET_REF.match(item.path):
        version = None if m.group(2) in (None, "latest") else int(m.group(2))
        return JobInput(name=name, mode=mode, dataset=m.group(1), version=version)
    if is_url(item.path):  # an s3:// one is given its bucket's datastore when submitted
        url = check_url(item.path, f"inputs.{name}", folder=item.type == "uri_folder")
        return JobInput(name=name, mode=mode, url=url)
    local = (base / item.path).resolve()
    if not local.exists():
        raise InvalidInput(f"inputs.{name}: {item.path} is neither a data reference nor a path")
    if local.is_dir() != (item.type == "uri_folder"):
        raise InvalidInput(f"inputs.{name}: {item.path} is not a {item.type}")
    return local, mode


class Input:
    """A data input with Azure ML v2's name (``azure.ai.ml.Input``), for a
    ``ScriptRunConfig``'s arguments, where it stands for the local path it becomes on the
    agent (``${{inputs.<name>}}``): ``Input(type="uri_file", path="https://host/data.csv")``,
    ``Input(type="uri_folder", path="s3://bucket/raw/")``, or any path a job file's input
    takes but a local one (``azureml://datastores/...``, ``azureml:<dataset>:<version>``,
    a model). ``name`` is the input's name (Azure takes it from the job's ``inputs`` dict;
    the default is made from the path). Checked when made, as a job file's input is."""

    @refuses(
        description=_NO_DESCRIPTION,
        optional="an input is always given: leave it out of the arguments when it is not",
    )
    def __init__(
        self,
        *,
        type: Literal["uri_folder", "uri_file", "custom_model", "mlflow_model"] = "uri_folder",
        path: str,
        mode: Literal["ro_mount", "download"] = "ro_mount",
        name: str | None = None,
        path_on_compute: str | None = None,
        optional: bool | None = None,
        description: str | None = None,
    ) -> None:
        self.name = name or _input_name(path)
        item = DataInput(type=type, path=path, mode=mode)
        made = _data_input(self.name, item, Path.cwd())
        if not isinstance(made, JobInput):
            raise InvalidInput(
                f"Input({path!r:.200}): a local path is uploaded by a job file's inputs, or"
                " with Datastore.upload and bound by datastore.path(...)"
            )
        if path_on_compute is not None:
            where = validate_run_path(path_on_compute)
            made = msgspec.structs.replace(made, path_on_compute=where)
        self.type, self.path, self.mode = type, path, mode
        self.path_on_compute = path_on_compute
        self._input = made

    def job_binding(self) -> JobInput:
        """The job input this declares."""
        return self._input

    def __str__(self) -> str:
        return f"${{{{inputs.{self.name}}}}}"


def _input_name(path: str) -> str:
    tail = path.rstrip("/").rsplit("/", 1)[-1] or "input"
    return (re.sub(r"[^A-Za-z0-9_]+", "_", tail).strip("_") or "input")[:64]


_ModelType = Literal["custom_model", "mlflow_model", "triton_model"]
_MODEL_TYPES: dict[str, _ModelType] = {t: t for t in get_args(_ModelType)}


def _model_output(name: str, item: Output) -> JobOutput:
    where = f"outputs.{name}"
    if item.path is not None:
        raise refuse(where, "path", "a model output is the run's files; register it by name")
    if item.version is not None:
        raise refuse(where, "version", "Cairn registers the next version of the model's name")
    return JobOutput(name=name, register_as=item.name, model_type=_MODEL_TYPES[item.type])


def _data_output(name: str, item: Output | None) -> JobOutput:
    if item is not None:
        if item.description is not None:
            raise refuse(f"outputs.{name}", "description", _NO_DESCRIPTION)
        if item.mode != "upload":
            raise refuse(
                f"outputs.{name}",
                "mode",
                "an output is uploaded when the job ends (mode: upload), never written in place",
            )
        if item.type in _MODEL_TYPES:
            return _model_output(name, item)
        if item.version is not None:
            raise refuse(
                f"outputs.{name}", "version", "Cairn registers the next version of the dataset"
            )
        if item.type != "uri_folder":
            raise refuse(
                f"outputs.{name}", "type", "an output is a folder (uri_folder): write into it"
            )
    if item is None or item.path is None:
        return JobOutput(name=name, register_as=item.name if item else None)
    m = _DATASTORE_URI.match(item.path)
    if not m:
        raise InvalidInput(f"outputs.{name}.path: use azureml://datastores/<name>/paths/<path>")
    return JobOutput(name=name, datastore=m.group(1), path=m.group(2), register_as=item.name)


def load_job_file(path: Path) -> tuple[JobFile, ScriptRunConfig]:
    """Read and check a job file; the run config it describes."""
    return job_from_doc(read_yaml(path), path)


#: libyaml's safe loader where PyYAML was built with it (the same documents and errors, with
#: their line and column, at a tenth of the pure-Python loader's cost), else PyYAML's own
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` through the fastest safe loader at hand."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # a safe loader, as yaml.safe_load uses


def read_yaml(path: Path) -> dict[str, Any]:
    """A job file's mapping of keys."""
    try:
        doc = _safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read job file {path}: {exc}") from exc
    return _mapping(doc, path)


def load_yaml_as(path: Path, kind: type[_T]) -> _T:
    """A YAML file of one mapping of keys (an endpoint's or a deployment's), checked as
    ``kind``; ``InvalidInput`` naming the file and what is wrong."""
    try:
        doc = _safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: a mapping of keys")
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc


def load_job_doc(doc: Any, path: Path) -> tuple[JobFile, ScriptRunConfig]:
    """Check a job file's document (``path``: where it is written, or the file that holds it
    inline; paths in it are relative to its folder); the run config it describes."""
    return job_from_doc(_mapping(doc, path), path)


def _mapping(doc: Any, path: Path) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: a job file is a mapping of keys")
    return doc


def job_from_doc(doc: dict[str, Any], path: Path) -> tuple[JobFile, ScriptRunConfig]:
    """Check a command job's keys (read from ``path``); the run config they describe."""
    try:
        _refuse_expressions(doc, "")
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc.message}") from exc
    try:
        job = msgspec.convert(doc, JobFile)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    if job.schema is not None and not job.schema.endswith(_COMMAND_SCHEMA):
        raise InvalidInput(f"{path}: $schema {job.schema!r} is not a command job's schema")
    if job.name is not None:
        raise refuse(str(path), "name", "Cairn makes every run's id; use display_name")
    base = path.parent
    data_inputs: list[JobInput] = []
    local_inputs: dict[str, tuple[Path, InputMode]] = {}
    for key, value in job.inputs.items():
        if isinstance(value, dict):
            try:
                item = msgspec.convert(value, DataInput)
            except msgspec.ValidationError as exc:
                raise InvalidInput(f"{path}: inputs.{key}: {exc}") from exc
            made = _data_input(key, item, base)
            if isinstance(made, JobInput):
                data_inputs.append(made)
            else:
                local_inputs[key] = made
        elif not isinstance(value, (str, int, float, bool)):
            raise InvalidInput(
                f"{path}: inputs.{key} must be a literal (string, number, boolean) or a data"
                " input ({type: uri_folder, path: ...})"
            )
    command = _command(job, {i.name for i in data_inputs} | set(local_inputs))
    config = ScriptRunConfig(
        source_directory=base / job.code,
        command=["/bin/sh", "-c", command],
        compute_target=_strip_prefix(job.compute),
        environment=environment_of(job.environment, base),
        max_run_duration_seconds=job.limits.timeout if job.limits else None,
        environment_variables={k: str(v) for k, v in job.environment_variables.items()},
        secrets=job.secrets,
    )
    config.job_inputs = data_inputs
    config.job_outputs = [_data_output(k, v) for k, v in job.outputs.items()]
    config.local_inputs = local_inputs
    return job, config
