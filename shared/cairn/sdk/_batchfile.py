"""Batch endpoints and deployments from YAML in the shape of the Azure ML CLI v2
(``cairn batch-endpoint create --file``, ``cairn batch-deployment create --file``,
``cairn batch-endpoint invoke --name E --input <data>``)::

    # endpoint.yml
    name: scorer
    description: nightly scoring

    # deployment.yml
    name: v1
    endpoint_name: scorer
    code_configuration: {code: ./src, scoring_script: score.py}
    environment: azureml:sklearn-env:1     # or inline {image, conda_file}; none: the agent's
    compute: local
    resources: {instance_count: 2}         # workers: instance_count * max_concurrency
    max_concurrency_per_instance: 1
    mini_batch_size: 10                    # files per mini-batch
    output_action: append_row
    output_file_name: predictions.csv
    retry_settings: {max_retries: 3, timeout: 30}
    error_threshold: -1
    logging_level: info

Every key is read: honoured, or refused naming it. Paths are relative to the YAML file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.errors import InvalidInput
from cairn.proto.batch import BatchDeploymentSpec, CreateBatchEndpoint, SetBatchDeployment
from cairn.sdk._jobfile import InlineEnvironment, environment_of, load_yaml_as
from cairn.sdk._jobs import ScriptRunConfig, build_job
from cairn.sdk._refusals import refuse
from cairn.sdk._session import Session, new_id

__all__ = [
    "BatchDeploymentFile",
    "BatchEndpointFile",
    "create_batch_deployment",
    "create_batch_endpoint",
    "load_batch_deployment_file",
    "load_batch_endpoint_file",
]

_ENDPOINT_SCHEMA = "batchEndpoint.schema.json"
_DEPLOYMENT_SCHEMAS = ("batchDeployment.schema.json", "modelBatchDeployment.schema.json")
_LEVELS: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]] = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
}
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _tags(tags: dict[str, str | int | float | bool]) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in tags.items()}


class BatchEndpointFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    name: str
    description: str = ""
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    auth_mode: str = "aad_token"
    defaults: Any = None

    def checked(self, path: Path) -> BatchEndpointFile:
        where = str(path)
        if self.auth_mode != "aad_token":
            raise refuse(
                where, "auth_mode", "a batch endpoint is invoked by members, as themselves"
            )
        if self.defaults is not None:
            raise refuse(
                where,
                "defaults",
                "the first deployment is the default; 'batch-deployment"
                " create --set-default' moves it",
            )
        return self


class CodeConfiguration(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: str = "."
    scoring_script: str


class Resources(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    instance_count: int = 1
    instance_type: str | None = None
    properties: Any = None


class RetrySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_retries: int = 3
    timeout: float = 30.0


class BatchDeploymentFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    name: str
    endpoint_name: str
    type: Literal["model"] = "model"
    description: str = ""
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    model: Any = None
    code_configuration: CodeConfiguration
    environment: str | InlineEnvironment | None = None
    compute: str = "local"
    resources: Resources = msgspec.field(default_factory=Resources)
    max_concurrency_per_instance: int = 1
    mini_batch_size: int = 10
    output_action: Literal["append_row", "summary_only"] = "append_row"
    output_file_name: str = "predictions.csv"
    retry_settings: RetrySettings = msgspec.field(default_factory=RetrySettings)
    error_threshold: int = -1
    logging_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    environment_variables: dict[str, str | int | float] = msgspec.field(default_factory=dict)

    def checked(self, path: Path) -> BatchDeploymentFile:
        where = str(path)
        if self.model is not None:
            raise refuse(
                where,
                "model",
                "ship the model with the code, or read a registered model's"
                " files from the scoring script",
            )
        if self.resources.instance_type is not None:
            raise refuse(where, "resources.instance_type", "workers take one slot of an agent")
        if self.resources.properties is not None:
            raise refuse(where, "resources.properties", "workers take one slot of an agent")
        checks = {
            "resources.instance_count": self.resources.instance_count >= 1,
            "max_concurrency_per_instance": self.max_concurrency_per_instance >= 1,
            "mini_batch_size": self.mini_batch_size >= 1,
            "retry_settings.max_retries": self.retry_settings.max_retries >= 1,
            "retry_settings.timeout": self.retry_settings.timeout > 0,
            "error_threshold": self.error_threshold >= -1,
            "output_file_name": bool(_FILE_NAME.fullmatch(self.output_file_name))
            and self.output_file_name not in (".", ".."),
        }
        for key, ok in checks.items():
            if not ok:
                raise InvalidInput(f"{where}: {key} is out of range")
        if self.resources.instance_count * self.max_concurrency_per_instance > 64:
            raise InvalidInput(
                f"{where}: resources.instance_count * max_concurrency_per_instance is at most 64"
            )
        script = path.parent / self.code_configuration.code / self.code_configuration.scoring_script
        if not script.is_file():
            raise InvalidInput(
                f"{where}: code_configuration.scoring_script {str(script)!r} is not a file"
            )
        return self


def load_batch_endpoint_file(path: Path) -> BatchEndpointFile:
    found: BatchEndpointFile = load_yaml_as(path, BatchEndpointFile)
    if found.schema is not None and not found.schema.endswith(_ENDPOINT_SCHEMA):
        raise InvalidInput(f"{path}: $schema {found.schema!r} is not a batch endpoint's")
    return found.checked(path)


def load_batch_deployment_file(path: Path) -> BatchDeploymentFile:
    found: BatchDeploymentFile = load_yaml_as(path, BatchDeploymentFile)
    if found.schema is not None and not found.schema.endswith(_DEPLOYMENT_SCHEMAS):
        raise InvalidInput(f"{path}: $schema {found.schema!r} is not a batch deployment's")
    return found.checked(path)


async def create_batch_endpoint(ws: Session, found: BatchEndpointFile) -> None:
    await ws.send(
        CreateBatchEndpoint(
            command_id=new_id(),
            name=found.name,
            description=found.description,
            tags=_tags(found.tags),
        )
    )


async def create_batch_deployment(
    ws: Session, found: BatchDeploymentFile, base: Path, *, make_default: bool = False
) -> None:
    """Upload the deployment's code and record its spec on its endpoint."""
    config = ScriptRunConfig(
        source_directory=base / found.code_configuration.code,
        command=["true"],
        compute_target=found.compute,
        environment=environment_of(found.environment, base),
        environment_variables={k: str(v) for k, v in found.environment_variables.items()},
    )
    job, env_name, env_version = await build_job(ws, config)
    spec = BatchDeploymentSpec(
        job=msgspec.structs.replace(job, command=[], inputs=[], outputs=[]),
        compute=found.compute,
        environment_name=env_name,
        environment_version=env_version,
        scoring_script=found.code_configuration.scoring_script,
        instance_count=found.resources.instance_count,
        max_concurrency_per_instance=found.max_concurrency_per_instance,
        mini_batch_size=found.mini_batch_size,
        output_action=found.output_action,
        output_file_name=found.output_file_name,
        error_threshold=found.error_threshold,
        max_retries=found.retry_settings.max_retries,
        timeout_s=found.retry_settings.timeout,
        logging_level=_LEVELS[found.logging_level],
        description=found.description,
        tags=_tags(found.tags),
    )
    await ws.send(
        SetBatchDeployment(
            command_id=new_id(),
            endpoint=found.endpoint_name,
            name=found.name,
            spec=spec,
            make_default=make_default,
        )
    )
