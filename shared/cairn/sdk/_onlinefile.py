"""Online endpoints and deployments from YAML in the shape of the Azure ML CLI v2
(``cairn online-endpoint create --file``, ``cairn online-deployment create --file``)::

    # endpoint.yml
    name: diabetes
    auth_mode: key
    description: diabetes scoring

    # blue.yml
    name: blue
    endpoint_name: diabetes
    model: azureml:diabetes_model:1
    code_configuration: {code: ./onlinescoring, scoring_script: score.py}
    environment: azureml:sklearn-env:1      # or inline {image, conda_file}; none: the agent's
    instance_type: Standard_DS3_v2          # recorded (a replica takes one slot of an agent)
    instance_count: 2                       # replicas
    compute: local                          # the compute target whose agents run them
    request_settings: {request_timeout_ms: 5000}   # at most 300000
    rollout_timeout_s: 1800                 # Cairn's: an update with no new replica ready
                                            # within it is rolled back (at most 86400)
    scale_settings:                         # or {type: default}: instance_count, always
      type: target_utilization
      min_instances: 1
      max_instances: 3
      polling_interval: 10                  # seconds
      target_utilization_percentage: 70
    data_collector:                         # requests and answers as JSON lines in the
      collections:                          # workspace's default datastore
        model_inputs: {enabled: 'True'}
        model_outputs: {enabled: 'True'}
      sampling_rate: 1.0                    # the share of requests collected
      rolling_rate: Hour                    # Minute, Hour or Day: a new file each

Every key is read: honoured, or refused naming it. Paths are relative to the YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.domain.environment import parse_reference
from cairn.errors import InvalidInput
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.serving import (
    MAX_REQUEST_TIMEOUT_S,
    DataCollector,
    ScaleSettings,
    check_timeouts,
)
from cairn.sdk._jobfile import InlineEnvironment, environment_of, load_yaml_as
from cairn.sdk._refusals import refuse
from cairn.sdk._webservice import environment_ref

__all__ = [
    "DeploymentFile",
    "EndpointFile",
    "load_deployment_file",
    "load_endpoint_file",
]

_ENDPOINT_SCHEMA = "managedOnlineEndpoint.schema.json"
_DEPLOYMENT_SCHEMAS = (
    "managedOnlineDeployment.schema.json",
    "kubernetesOnlineDeployment.schema.json",
)
_PROBES = "a replica is ready once its init() returned; a lost one is replaced by the scheduler"


class EndpointFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    name: str
    auth_mode: Literal["key", "aml_token", "aad_token"] = "key"
    description: str = ""
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    traffic: dict[str, int] | None = None
    mirror_traffic: dict[str, int] | None = None
    identity: Any = None
    public_network_access: str | None = None
    kind: str | None = None

    def checked(self, path: Path) -> EndpointFile:
        where = str(path)
        if self.auth_mode != "key":
            raise refuse(
                where,
                "auth_mode",
                "an endpoint takes its keys, and the API tokens of the workspace's members",
            )
        if self.traffic:
            raise refuse(where, "traffic", "create the deployments, then 'online-endpoint update'")
        if self.mirror_traffic:
            raise refuse(
                where, "mirror_traffic", "create the deployments, then 'online-endpoint update'"
            )
        for key in ("identity", "public_network_access", "kind"):
            if getattr(self, key) is not None:
                raise refuse(where, key, "the gateway is the endpoint's only address")
        return self

    @property
    def tag_strings(self) -> dict[str, str]:
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.tags.items()}


class CodeConfiguration(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: str = "."
    scoring_script: str


class RequestSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    request_timeout_ms: int | None = None
    max_concurrent_requests_per_instance: int | None = None
    max_queue_wait_ms: int | None = None


class ScaleSettingsFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``scale_settings``: ``{type: default}`` (``instance_count`` replicas, always) or
    ``{type: target_utilization, min_instances, max_instances, polling_interval,
    target_utilization_percentage}`` (autoscaling; ``instance_count`` is where it starts)."""

    type: Literal["default", "target_utilization"] = "default"
    min_instances: int | None = None
    max_instances: int | None = None
    polling_interval: float | None = None
    target_utilization_percentage: float | None = None

    def settings(self, where: str) -> ScaleSettings | None:
        given = {
            "min_replicas": self.min_instances,
            "max_replicas": self.max_instances,
            "polling_interval_s": self.polling_interval,
            "target_utilization_pct": self.target_utilization_percentage,
        }
        if self.type == "default":
            for key in (
                "min_instances",
                "max_instances",
                "polling_interval",
                "target_utilization_percentage",
            ):
                if getattr(self, key) is not None:
                    raise refuse(
                        where, f"scale_settings.{key}", "set type: target_utilization as well"
                    )
            return None
        try:
            return msgspec.convert({k: v for k, v in given.items() if v is not None}, ScaleSettings)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"{where}: scale_settings: {exc}") from None


class Collection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: str | bool = False
    data: Any = None


Rolling = Literal["minute", "hour", "day"]
CollectionName = Literal["model_inputs", "model_outputs"]
_ROLLING: dict[str, Rolling] = {"minute": "minute", "hour": "hour", "day": "day"}
_COLLECTIONS: dict[str, CollectionName] = {
    "model_inputs": "model_inputs",
    "model_outputs": "model_outputs",
}


class DataCollectorSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``data_collector`` of a deployment file: which of the request's body
    (``model_inputs``) and ``run()``'s answer (``model_outputs``) its replicas collect."""

    collections: dict[str, Collection] = msgspec.field(default_factory=dict)
    sampling_rate: float = 1.0
    rolling_rate: str = "Hour"
    request_logging: Any = None

    def collected(self, where: str) -> list[CollectionName]:
        """The enabled collections, checked (every key honoured or refused by name)."""
        if self.request_logging is not None:
            raise refuse(
                where,
                "data_collector.request_logging",
                "headers are not collected; the request's id, time and body are",
            )
        if not 0 < self.sampling_rate <= 1:
            raise InvalidInput(f"{where}: data_collector.sampling_rate must be within (0, 1]")
        if self.rolling_rate.lower() not in _ROLLING:
            raise InvalidInput(
                f"{where}: data_collector.rolling_rate {self.rolling_rate!r} is none of"
                " Minute, Hour, Day"
            )
        enabled: list[CollectionName] = []
        for name, collection in sorted(self.collections.items()):
            key = f"data_collector.collections.{name}"
            if name not in _COLLECTIONS:
                raise refuse(
                    where,
                    key,
                    "a replica collects model_inputs (the request's body) and model_outputs"
                    " (run()'s answer)",
                )
            if collection.data is not None:
                raise refuse(
                    where,
                    f"{key}.data",
                    "collected data lands in the workspace's default datastore under"
                    " modelDataCollector/<endpoint>/<deployment>/",
                )
            if _enabled(collection.enabled, f"{where}: {key}.enabled"):
                enabled.append(_COLLECTIONS[name])
        return enabled

    def spec(self, datastore: str) -> DataCollector | None:
        """The deployment's collector writing to ``datastore`` (None: nothing enabled)."""
        collections = self.collected("deployment file")
        if not collections:
            return None
        return DataCollector(
            datastore=datastore,
            collections=collections,
            sampling_rate=self.sampling_rate,
            rolling_rate=_ROLLING[self.rolling_rate.lower()],
        )


def _enabled(value: str | bool, where: str) -> bool:
    """``enabled`` as Azure writes it (``'True'``/``'False'``) or as a YAML boolean."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidInput(f"{where} is {value!r}: write 'True' or 'False'")


class DeploymentFile(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename={"schema": "$schema"}
):
    schema: str | None = None
    name: str
    endpoint_name: str
    model: str | dict[str, Any] | None = None
    code_configuration: CodeConfiguration
    environment: str | InlineEnvironment | None = None
    instance_type: str | None = None
    instance_count: int = 1
    compute: str = "local"
    environment_variables: dict[str, str | int | float] = msgspec.field(default_factory=dict)
    request_settings: RequestSettings | None = None
    description: str = ""
    tags: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    liveness_probe: Any = None
    readiness_probe: Any = None
    app_insights_enabled: bool = False
    scale_settings: ScaleSettingsFile | None = None
    data_collector: DataCollectorSettings | None = None
    egress_public_network_access: str | None = None
    #: Cairn's: how long a rolling update to this file's spec may take (seconds)
    rollout_timeout_s: float | None = None

    def checked(self, path: Path) -> DeploymentFile:
        where = str(path)
        for key in ("liveness_probe", "readiness_probe"):
            if getattr(self, key) is not None:
                raise refuse(where, key, _PROBES)
        if self.app_insights_enabled:
            raise refuse(where, "app_insights_enabled", "the gateway's /metrics and get-logs")
        if self.scale_settings is not None:
            self.scale_settings.settings(where)
        if self.data_collector is not None:
            self.data_collector.collected(where)
        if self.egress_public_network_access is not None:
            raise refuse(where, "egress_public_network_access", "replicas run on agents")
        settings = self.request_settings or RequestSettings()
        for key in ("request_timeout_ms", "max_concurrent_requests_per_instance"):
            value = getattr(settings, key)
            if value is not None and value < 1:
                raise InvalidInput(f"{where}: request_settings.{key} must be at least 1")
        if settings.max_queue_wait_ms is not None and settings.max_queue_wait_ms < 0:
            raise InvalidInput(f"{where}: request_settings.max_queue_wait_ms must not be negative")
        if settings.request_timeout_ms is not None and self.request_timeout_s > (
            MAX_REQUEST_TIMEOUT_S
        ):
            raise InvalidInput(
                f"{where}: request_settings.request_timeout_ms must be at most"
                f" {MAX_REQUEST_TIMEOUT_S * 1000:g}: {settings.request_timeout_ms} given"
            )
        check_timeouts(
            request_timeout_s=self.request_timeout_s,
            rollout_timeout_s=self.rollout_timeout,
            where=f"{where}: ",
        )
        self.models  # noqa: B018 - checks the reference now
        return self

    @property
    def models(self) -> list[tuple[str, int]]:
        """``model: azureml:<name>:<version>`` (a registered version; none: no model)."""
        if self.model is None:
            return []
        if not isinstance(self.model, str):
            raise refuse(
                "deployment file",
                "model",
                "register the model first and name it azureml:<name>:<version>",
            )
        name, version = parse_reference(self.model)
        if version is None:
            raise InvalidInput(f"model {self.model!r}: name its version (azureml:<name>:<version>)")
        return [(name, int(version))]

    def environment_ref(self, base: Path) -> tuple[str | None, int | None, EnvironmentSpec | None]:
        """The environment as a deployment names it (paths relative to ``base``)."""
        return environment_ref(environment_of(self.environment, base))

    def collector(self, datastore: str) -> DataCollector | None:
        """What the replicas collect, into ``datastore`` (the workspace's default)."""
        return None if self.data_collector is None else self.data_collector.spec(datastore)

    @property
    def max_concurrent_requests(self) -> int:
        """``request_settings.max_concurrent_requests_per_instance`` (1, as Azure's)."""
        found = (self.request_settings or RequestSettings()).max_concurrent_requests_per_instance
        return 1 if found is None else found

    @property
    def max_queue_wait_s(self) -> float:
        """``request_settings.max_queue_wait_ms`` (500, as Azure's), in seconds."""
        found = (self.request_settings or RequestSettings()).max_queue_wait_ms
        return 0.5 if found is None else found / 1000

    @property
    def scale(self) -> ScaleSettings | None:
        """``scale_settings`` in Cairn's terms (None: ``instance_count`` replicas)."""
        found = self.scale_settings
        return None if found is None else found.settings("deployment file")

    @property
    def rollout_timeout(self) -> float:
        """``rollout_timeout_s`` (1800, as a deployment's)."""
        return 1800.0 if self.rollout_timeout_s is None else float(self.rollout_timeout_s)

    @property
    def request_timeout_s(self) -> float:
        timeout = (self.request_settings or RequestSettings()).request_timeout_ms
        return 60.0 if timeout is None else timeout / 1000

    @property
    def tag_strings(self) -> dict[str, str]:
        tags = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.tags.items()}
        if self.instance_type is not None:  # recorded: a replica takes one slot of an agent
            tags.setdefault("instance_type", self.instance_type)
        return tags

    def source(self, base: Path) -> Path:
        return base / self.code_configuration.code


def load_endpoint_file(path: Path) -> EndpointFile:
    found: EndpointFile = load_yaml_as(path, EndpointFile)
    if found.schema is not None and not found.schema.endswith(_ENDPOINT_SCHEMA):
        raise InvalidInput(f"{path}: $schema {found.schema!r} is not an online endpoint's")
    return found.checked(path)


def load_deployment_file(path: Path) -> DeploymentFile:
    """The checked file; its paths are relative to ``path.parent``."""
    found: DeploymentFile = load_yaml_as(path, DeploymentFile)
    if found.schema is not None and not found.schema.endswith(_DEPLOYMENT_SCHEMAS):
        raise InvalidInput(f"{path}: $schema {found.schema!r} is not an online deployment's")
    return found.checked(path)
