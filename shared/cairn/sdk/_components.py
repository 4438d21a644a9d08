"""Command components: component files, and components registered in the registry.

A component file (``type: command`` with typed ``inputs`` and ``outputs``) is a pipeline step's
definition (``component: ./train.yml``); ``register_component_file`` registers one as the next
version of its name (``cairn component create --file``), and a step names a registered one as
``azureml:train:1`` or ``train@latest``: :func:`lookup_components` fetches those a pipeline
file names, in the shape of a component file plus the snapshot its code was uploaded as.
Also the YAML reading and error shaping the pipeline loader shares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from cairn.errors import InvalidBinding, InvalidInput, NotFound
from cairn.proto.assets import ComponentPort, ComponentSpec
from cairn.sdk._assets import Environment
from cairn.sdk._async_assets import AsyncAssets
from cairn.sdk._jobfile import InlineEnvironment, environment_of
from cairn.sdk._jobs import _environment as _job_environment
from cairn.sdk._jobs import upload_code
from cairn.sdk._refusals import refuse
from cairn.sdk._session import Session

__all__ = [
    "ComponentFile",
    "ComponentInput",
    "ComponentOutput",
    "Registered",
    "load_component_file",
    "lookup_components",
    "register_component_file",
    "registered_reference",
]

_COMPONENT_SCHEMA = "commandComponent.schema.json"
_COMMENT = "Cairn keeps no component record to hold it: write a YAML comment"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
COMMAND_REF = re.compile(rf"\$\{{\{{\s*(inputs|outputs)\.({_IDENT})\s*\}}\}}")
_REGISTERED = re.compile(
    r"^(?:azureml:|cairn:)?([A-Za-z0-9_][A-Za-z0-9_.-]*)(?::(\d+|latest)|@(latest))$"
)


class ComponentInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal[
        "string",
        "integer",
        "number",
        "boolean",
        "uri_folder",
        "uri_file",
        "custom_model",
        "mlflow_model",
    ]
    default: str | int | float | bool | None = None
    optional: bool = False
    description: str | None = None


class ComponentOutput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["uri_folder", "custom_model", "mlflow_model", "triton_model"] = "uri_folder"
    description: str | None = None


class ComponentFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    type: Literal["command"] = "command"
    name: str | None = None
    version: str | int | None = None
    display_name: str | None = None
    description: str | None = None
    code: str = "."
    command: str
    environment: str | InlineEnvironment | None = None
    inputs: dict[str, ComponentInput] = msgspec.field(default_factory=dict)
    outputs: dict[str, ComponentOutput] = msgspec.field(default_factory=dict)
    environment_variables: dict[str, str | int | float] = msgspec.field(default_factory=dict)
    is_deterministic: bool = True


@dataclass(frozen=True)
class Registered:
    """A registered component as a pipeline step uses it: its definition in the shape of a
    component file, and its code's snapshot (uploaded when it was registered)."""

    name: str
    version: int
    file: ComponentFile
    snapshot: tuple[str, str] | None
    environment: str | Environment | None


def binding_error(exc: msgspec.ValidationError, prefix: str = "") -> InvalidBinding:
    """msgspec's ``... - at `$.jobs.a` `` as ``jobs.a.<key>: ...``."""
    text = str(exc)
    found = re.search(r"^(.*?)(?: - at `\$(.*)`)?$", text)
    message, where = (found.group(1), found.group(2) or "") if found else (text, "")
    where = re.sub(r"\[(\d+)\]", r"[\1]", where).lstrip(".")
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        where = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        message = "unknown key"
    path = ".".join(p for p in (prefix, where) if p) or "(top)"
    return InvalidBinding.at(path, message)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: a job file is a mapping of keys")
    return doc


def registered_reference(ref: str) -> tuple[str, int | None] | None:
    """``(name, version)`` of a registered component's reference (``azureml:train:1``,
    ``azureml:train@latest``, ``train:2``, ``train@latest``; version None: the latest), or
    None for a file path."""
    m = _REGISTERED.match(ref)
    if m is None or ref.endswith((".yml", ".yaml")):
        return None
    version = m.group(2)
    return m.group(1), None if version in (None, "latest") else int(version)


def refuse_descriptions(component: ComponentFile, where: str) -> None:
    if component.description is not None:
        raise refuse(where, "description", _COMMENT)
    for key, spec in component.inputs.items():
        if spec.description is not None:
            raise refuse(f"{where}.inputs.{key}", "description", _COMMENT)
    for key, out in component.outputs.items():
        if out.description is not None:
            raise refuse(f"{where}.outputs.{key}", "description", _COMMENT)


def check_component_expressions(doc: dict[str, Any], where: str) -> None:
    for key, value in doc.items():
        text = value if isinstance(value, str) else ""
        rest = COMMAND_REF.sub("", text) if key == "command" else text
        if "${{" in rest:
            raise InvalidBinding.at(f"{where}.{key}", "expressions belong in command only")


async def lookup_components(ws: Session, path: Path) -> dict[str, Registered]:
    """The registered components the pipeline file's steps name (``component:
    azureml:train:1``), looked up in the workspace."""
    doc = read_yaml(path)
    jobs = doc.get("jobs")
    found: dict[str, Registered] = {}
    for name, step in (jobs if isinstance(jobs, dict) else {}).items():
        ref = step.get("component") if isinstance(step, dict) else None
        parsed = registered_reference(ref) if isinstance(ref, str) else None
        if parsed is None or ref in found:
            continue
        assert isinstance(ref, str)
        try:
            record = await AsyncAssets(ws).get("component", parsed[0], parsed[1])
        except NotFound as exc:
            raise InvalidBinding.at(f"jobs.{name}.component", exc.message) from exc
        spec = msgspec.convert(record["spec"], ComponentSpec)
        found[ref] = _registered(record["name"], int(record["version"]), spec)
    return found


def _registered(name: str, version: int, spec: ComponentSpec) -> Registered:
    ports = {
        k: {"type": p.type, "default": p.default, "optional": p.optional}
        for k, p in spec.inputs.items()
    }
    file = msgspec.convert(
        {
            "command": spec.command,
            "name": name,
            "version": version,
            "display_name": spec.display_name,
            "inputs": ports,
            "outputs": {k: {"type": p.type} for k, p in spec.outputs.items()},
            "environment_variables": dict(spec.env_vars),
            "is_deterministic": spec.is_deterministic,
        },
        ComponentFile,
    )
    environment: str | Environment | None = None
    if spec.environment_name is not None:
        environment = spec.environment_name
        if spec.environment_version is not None:
            environment = Environment(spec.environment_name)
            environment.version = spec.environment_version
    elif spec.environment is not None:
        environment = Environment._from(
            {"name": "inline", "version": None, "spec": msgspec.to_builtins(spec.environment)}
        )
    snapshot = (spec.snapshot, spec.snapshot_area) if spec.snapshot and spec.snapshot_area else None
    return Registered(name, version, file, snapshot, environment)


def load_component_file(path: Path) -> ComponentFile:
    """Read and check a command component file."""
    doc = read_yaml(path)
    check_component_expressions(doc, "")
    try:
        component = msgspec.convert(doc, ComponentFile)
    except msgspec.ValidationError as exc:
        raise binding_error(exc) from exc
    if component.schema is not None and not component.schema.endswith(_COMPONENT_SCHEMA):
        raise InvalidBinding.at("$schema", "is not a command component's")
    refuse_descriptions(component, str(path))
    return component


async def register_component_file(
    ws: Session, path: Path, name: str | None = None
) -> dict[str, Any]:
    """Register the component file at ``path`` (its code uploaded) as the next version of
    component ``name`` (default: the file's ``name``); returns the record. The file's
    ``version`` is refused: the registry numbers versions, as for environments."""
    component = load_component_file(path)
    name = name or component.name
    if not name:
        raise InvalidBinding.at("name", "a component to register needs a name")
    if component.version is not None:
        raise refuse(str(path), "version", "the registry numbers versions, as for environments")
    base = path.resolve().parent
    digest, area = await upload_code(ws, base / component.code)
    env = environment_of(component.environment, base)
    env_name, env_version, inline = _job_environment(env)
    spec = ComponentSpec(
        command=component.command,
        snapshot=digest,
        snapshot_area=area,
        environment_name=env_name,
        environment_version=env_version,
        environment=inline.spec if inline is not None else None,
        inputs={
            k: ComponentPort(type=v.type, default=v.default, optional=v.optional)
            for k, v in component.inputs.items()
        },
        outputs={k: ComponentPort(type=v.type) for k, v in component.outputs.items()},
        env_vars={k: str(v) for k, v in component.environment_variables.items()},
        display_name=component.display_name,
        is_deterministic=component.is_deterministic,
    )
    return await AsyncAssets(ws).register_component(name, spec)


def component_tags(component: ComponentFile | None) -> dict[str, str]:
    """A component step's run is tagged with the component's name and version."""
    if component is None or component.name is None:
        return {}
    version = f":{component.version}" if component.version is not None else ""
    return {"component": f"{component.name}{version}"}
