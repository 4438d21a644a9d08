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
literal value (shell-quoted); ``${{outputs.x}}`` becomes ``outputs/x``, a folder the agent
uploads with the run's files. Paths are relative to the YAML file.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from cairn.errors import InvalidInput
from cairn.sdk._jobs import ScriptRunConfig

__all__ = ["JobFile", "load_job_file"]

_REF = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class InlineEnvironment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    image: str | None = None
    conda_file: str | None = None
    name: str | None = None
    description: str | None = None


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    timeout: float | None = None


class Output(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["uri_folder", "uri_file"] = "uri_folder"
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


def _strip_prefix(ref: str) -> str:
    return ref.removeprefix("azureml:").removeprefix("cairn:")


def _environment(value: str | InlineEnvironment | None, base: Path) -> Any:
    from cairn.sdk._assets import Environment

    if value is None:
        return None
    if isinstance(value, str):
        ref = _strip_prefix(value)
        name, _, version = ref.partition("@") if "@" in ref else ref.partition(":")
        if not version or version == "latest":
            return name
        if not version.isdigit():
            raise InvalidInput(f"environment {value!r}: a version is a number or 'latest'")
        env = Environment(name)
        env.version = int(version)
        return env
    if value.conda_file is not None:
        env = Environment.from_conda_specification(value.name or "inline", base / value.conda_file)
    else:
        env = Environment(value.name or "inline")
    env.docker.base_image = value.image
    return env


def _command(job: JobFile) -> str:
    def sub(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "inputs":
            if name not in job.inputs:
                raise InvalidInput(
                    f"the command uses ${{{{inputs.{name}}}}}, which is not an input"
                )
            value = job.inputs[name]
            return shlex.quote(str(value).lower() if isinstance(value, bool) else str(value))
        if name not in job.outputs:
            raise InvalidInput(f"the command uses ${{{{outputs.{name}}}}}, which is not an output")
        return shlex.quote(f"outputs/{name}")

    return _REF.sub(sub, job.command)


def load_job_file(path: Path) -> tuple[JobFile, ScriptRunConfig]:
    """Read and check a job file; the run config it describes."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read job file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: a job file is a mapping of keys")
    try:
        job = msgspec.convert(doc, JobFile)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc
    for key, value in job.inputs.items():
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidInput(
                f"{path}: inputs.{key} must be a literal (string, number, boolean); data"
                " inputs (uri_file, uri_folder) come with datasets"
            )
    base = path.parent
    command = _command(job)
    outputs = " ".join(shlex.quote(f"outputs/{name}") for name in job.outputs)
    if outputs:  # the output folders exist before the command runs
        command = f"mkdir -p {outputs} && {command}"
    config = ScriptRunConfig(
        source_directory=base / job.code,
        command=["/bin/sh", "-c", command],
        compute_target=_strip_prefix(job.compute),
        environment=_environment(job.environment, base),
        max_run_duration_seconds=job.limits.timeout if job.limits else None,
        environment_variables={k: str(v) for k, v in job.environment_variables.items()},
    )
    return job, config
