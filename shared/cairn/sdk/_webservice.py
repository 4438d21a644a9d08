"""Azure ML v1's real-time deployment names over ``ws.endpoints``: ``InferenceConfig``,
``Model.deploy`` (which calls :func:`deploy`), ``Webservice``, and the deployment
configurations of ``LocalWebservice``, ``AciWebservice`` and ``AksWebservice``.

A v1 web service is a Cairn endpoint with one deployment, ``default``: its replicas run on
the agents of a compute target (``local`` unless ``deployment_target`` names another), each
in one slot, as jobs the scheduler leases and replaces when lost. Its scoring address is the
gateway's (``POST /endpoints/<workspace>/<name>/score``), with the endpoint's keys.
"""

from __future__ import annotations

import builtins
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.serving import (
    MAX_CONCURRENT_REQUESTS,
    MAX_REQUEST_TIMEOUT_S,
    ScaleSettings,
    check_timeouts,
)
from cairn.sdk._refusals import refuse, refuses
from cairn.sdk._runtime import WorkspaceBase

__all__ = [
    "DEPLOYMENT",
    "AciWebservice",
    "AksWebservice",
    "DeploymentConfiguration",
    "InferenceConfig",
    "LocalWebservice",
    "Webservice",
    "WebserviceException",
    "deploy",
    "environment_ref",
    "model_path",
]

#: the one deployment of a v1 web service
DEPLOYMENT = "default"
#: the deployment's tag saying which v1 configuration made it (``ACI``, ``AKS``, ``Local``)
COMPUTE_TYPE = "compute_type"
#: v1's states by a deployment's status
_STATES = {
    "Creating": "Transitioning",
    "Succeeded": "Healthy",
    "Failed": "Failed",
    "Deleted": "Deleting",
}


class WebserviceException(InvalidInput):
    """Azure ML v1's error of a web service that cannot do what was asked."""


class InferenceConfig:
    """What a deployment runs: ``entry_script`` (with ``init()`` and ``run(raw_data)``)
    inside ``source_directory`` (uploaded as a job's snapshot; default: the script's folder),
    in ``environment`` (an ``Environment``, registered or not; default: the agent's own
    interpreter)."""

    @refuses(
        runtime="name an environment instead",
        conda_file="give an Environment (Environment.from_conda_specification) instead",
        extra_docker_file_steps="build the image into an Environment (docker_image) instead",
        enable_gpu="replicas take no GPUs yet",
        base_image="give an Environment with docker_image instead",
        base_image_registry="give an Environment with docker_image instead",
        cuda_version="replicas take no GPUs yet",
    )
    def __init__(
        self,
        entry_script: str | os.PathLike[str] | None = None,
        runtime: str | None = None,
        conda_file: str | None = None,
        extra_docker_file_steps: str | None = None,
        source_directory: str | os.PathLike[str] | None = None,
        enable_gpu: bool | None = None,
        description: str | None = None,
        base_image: str | None = None,
        base_image_registry: Any = None,
        cuda_version: str | None = None,
        environment: Any = None,
    ) -> None:
        if entry_script is None:
            raise InvalidInput("InferenceConfig needs entry_script (with init() and run())")
        script = Path(entry_script)
        self.source_directory = Path(source_directory) if source_directory else None
        if self.source_directory is None:
            self.source_directory = script.parent if script.is_absolute() else Path(".")
            script = Path(script.name) if script.is_absolute() else script
        self.entry_script = script
        self.environment = environment
        self.description = description or ""

    def environment_ref(self) -> tuple[str | None, int | None, EnvironmentSpec | None]:
        return environment_ref(self.environment)


def environment_ref(env: Any) -> tuple[str | None, int | None, EnvironmentSpec | None]:
    """An environment as a deployment names it: registered (name, version; a name alone is
    its latest) or inline (an ``Environment`` never registered: its spec)."""
    if env is None:
        return None, None, None
    if isinstance(env, str):
        return env, None, None
    if env.version is None and not env.name.startswith("cairn-"):
        return None, None, env.spec()
    return env.name, env.version, None


@dataclass
class DeploymentConfiguration:
    """What a ``deploy_configuration`` says, in Cairn's terms: replicas and what each asks
    for, the time ``run()`` may take, the service's tags and description."""

    kind: str
    replicas: int = 1
    cpu_cores: float | None = None
    memory_gb: float | None = None
    request_timeout_s: float = 60.0
    #: how long a rolling update may take before it is rolled back
    rollout_timeout_s: float = 1800.0
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    #: ``run()`` calls each replica makes at once, and how long a request waits for one
    max_concurrent_requests: int = 1
    max_queue_wait_s: float = 0.5
    #: autoscaling (AKS's ``autoscale_*``); None: ``replicas``, always
    scale: ScaleSettings | None = None


def _auth(auth_enabled: bool | None) -> None:
    if auth_enabled is False:
        raise refuse(
            "deploy_configuration",
            "auth_enabled",
            "every Cairn endpoint answers only its keys or a member's token",
        )


class LocalWebservice:
    """A service on this machine's agents (compute target ``local``)."""

    @staticmethod
    def deploy_configuration(port: int | None = None) -> DeploymentConfiguration:
        """``port``: the gateway serves every endpoint; a port other than its own
        (``gateway_port``) is refused when the service is deployed."""
        config = DeploymentConfiguration(kind="Local")
        config.tags = {"cairn.port": str(port)} if port is not None else {}
        return config


class AciWebservice:
    """A single-replica service (Azure Container Instances' shape)."""

    @staticmethod
    @refuses(
        location="a service runs on its compute target's agents",
        ssl_enabled="serve the gateway behind a TLS proxy (docs/security.md)",
        enable_app_insights="a deployment's logs are get_logs(); metrics are at /metrics",
        dns_name_label="the scoring address is the gateway's",
        primary_key="keys are made by Cairn (regen_key makes new ones)",
        secondary_key="keys are made by Cairn (regen_key makes new ones)",
    )
    def deploy_configuration(
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str | None = None,
        location: str | None = None,
        auth_enabled: bool | None = None,
        ssl_enabled: bool | None = None,
        enable_app_insights: bool | None = None,
        dns_name_label: str | None = None,
        primary_key: str | None = None,
        secondary_key: str | None = None,
        rollout_timeout_s: float | None = None,
    ) -> DeploymentConfiguration:
        """``cpu_cores`` and ``memory_gb`` are recorded on the deployment (each replica takes
        one slot of an agent); ``properties`` join the tags. ``rollout_timeout_s`` (Cairn's;
        1800, at most a day): an update of the service with no new replica ready within it is
        rolled back."""
        _auth(auth_enabled)
        _, rollout_s = _timeouts("AciWebservice.deploy_configuration", None, rollout_timeout_s)
        return DeploymentConfiguration(
            kind="ACI",
            rollout_timeout_s=rollout_s,
            cpu_cores=cpu_cores,
            memory_gb=memory_gb,
            tags={**(properties or {}), **(tags or {})},
            description=description or "",
        )


class AksWebservice:
    """A service with several replicas (Azure Kubernetes Service's shape): ``num_replicas``
    replicas, each a job in a slot of an agent, in one queue group."""

    @staticmethod
    @refuses(
        gpu_cores="replicas take no GPUs yet",
        enable_app_insights="a deployment's logs are get_logs(); metrics are at /metrics",
        primary_key="keys are made by Cairn (regen_key makes new ones)",
        secondary_key="keys are made by Cairn (regen_key makes new ones)",
        namespace="a service runs on its compute target's agents",
    )
    def deploy_configuration(
        autoscale_enabled: bool | None = None,
        autoscale_min_replicas: int | None = None,
        autoscale_max_replicas: int | None = None,
        auth_enabled: bool | None = None,
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        enable_app_insights: bool | None = None,
        scoring_timeout_ms: int | None = None,
        num_replicas: int | None = None,
        primary_key: str | None = None,
        secondary_key: str | None = None,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str | None = None,
        gpu_cores: int | None = None,
        namespace: str | None = None,
        token_auth_enabled: bool | None = None,
        replica_max_concurrent_requests: int | None = None,
        max_request_wait_time: int | None = None,
        autoscale_refresh_seconds: int | None = None,
        autoscale_target_utilization: int | None = None,
        rollout_timeout_s: float | None = None,
    ) -> DeploymentConfiguration:
        """``scoring_timeout_ms`` bounds one ``run()`` (504 past it); a member's Cairn token
        is always accepted beside the keys, whatever ``token_auth_enabled`` says.
        ``replica_max_concurrent_requests`` (1) ``run()`` calls each replica makes at once,
        in worker threads; a request waits for a free one at most ``max_request_wait_time``
        ms (500), then is 503; beyond as many waiting as running, 429.

        ``autoscale_enabled=True``: the scheduler keeps between ``autoscale_min_replicas``
        (default 1) and ``autoscale_max_replicas`` (10) replicas, looking every
        ``autoscale_refresh_seconds`` (1) at how busy they are against
        ``autoscale_target_utilization`` percent (70); it starts with the minimum. Unlike
        Azure, autoscaling is off unless asked for (then ``num_replicas`` replicas, always,
        default 1).

        ``rollout_timeout_s`` (Cairn's; 1800): an update of the service with no new replica
        ready within it is rolled back. ``scoring_timeout_ms`` is at most 300,000 and
        ``rollout_timeout_s`` at most a day (``InvalidInput`` naming either)."""
        _auth(auth_enabled)
        if token_auth_enabled is False and auth_enabled is False:  # pragma: no cover
            raise InvalidInput("a service needs its keys or tokens")
        scale = _autoscale(
            autoscale_enabled,
            num_replicas,
            autoscale_min_replicas=autoscale_min_replicas,
            autoscale_max_replicas=autoscale_max_replicas,
            autoscale_refresh_seconds=autoscale_refresh_seconds,
            autoscale_target_utilization=autoscale_target_utilization,
        )
        if scale is not None:
            num_replicas = scale.min_replicas
        request_timeout_s, rollout_s = _timeouts(
            "AksWebservice.deploy_configuration", scoring_timeout_ms, rollout_timeout_s
        )
        if replica_max_concurrent_requests is not None and not (
            1 <= replica_max_concurrent_requests <= MAX_CONCURRENT_REQUESTS
        ):
            raise InvalidInput(
                "AksWebservice.deploy_configuration: replica_max_concurrent_requests must be"
                f" within [1, {MAX_CONCURRENT_REQUESTS}]: {replica_max_concurrent_requests} given"
            )
        return DeploymentConfiguration(
            kind="AKS",
            scale=scale,
            replicas=1 if num_replicas is None else num_replicas,
            cpu_cores=cpu_cores,
            memory_gb=memory_gb,
            request_timeout_s=request_timeout_s,
            rollout_timeout_s=rollout_s,
            tags={**(properties or {}), **(tags or {})},
            description=description or "",
            max_concurrent_requests=1
            if replica_max_concurrent_requests is None
            else replica_max_concurrent_requests,
            max_queue_wait_s=0.5 if max_request_wait_time is None else max_request_wait_time / 1000,
        )


def _timeouts(
    where: str, scoring_timeout_ms: float | None, rollout_timeout_s: float | None
) -> tuple[float, float]:
    """``scoring_timeout_ms`` (60,000) in seconds and ``rollout_timeout_s`` (1800), each
    within its range or ``InvalidInput`` naming it."""
    request_s = 60.0 if scoring_timeout_ms is None else scoring_timeout_ms / 1000
    rollout_s = 1800.0 if rollout_timeout_s is None else float(rollout_timeout_s)
    if not 0 < request_s <= MAX_REQUEST_TIMEOUT_S:
        raise InvalidInput(
            f"{where}: scoring_timeout_ms must be within (0, {MAX_REQUEST_TIMEOUT_S * 1000:g}]:"
            f" {scoring_timeout_ms} given"
        )
    check_timeouts(
        request_timeout_s=request_s,
        rollout_timeout_s=rollout_s,
        where=f"{where}: ",
    )
    return request_s, rollout_s


def _autoscale(
    enabled: bool | None, num_replicas: int | None, **given: int | None
) -> ScaleSettings | None:
    """AKS's ``autoscale_*`` as ``ScaleSettings``; each is refused by name unless
    ``autoscale_enabled=True``, and ``num_replicas`` is refused beside it."""
    where = "AksWebservice.deploy_configuration"
    if not enabled:
        for name, value in given.items():
            if value is not None:
                raise refuse(where, name, "set autoscale_enabled=True as well (or num_replicas)")
        return None
    if num_replicas is not None:
        raise refuse(where, "num_replicas", "an autoscaled service starts with its minimum")
    low, high = given["autoscale_min_replicas"], given["autoscale_max_replicas"]
    refresh, target = given["autoscale_refresh_seconds"], given["autoscale_target_utilization"]
    try:
        return msgspec.convert(
            {
                "min_replicas": 1 if low is None else low,
                "max_replicas": 10 if high is None else high,
                "polling_interval_s": 1.0 if refresh is None else float(refresh),
                "target_utilization_pct": 70.0 if target is None else float(target),
            },
            ScaleSettings,
        )
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def _compute(target: Any) -> str:
    if target is None:
        return "local"
    return str(getattr(target, "name", target))


def _check_port(workspace: WorkspaceBase, config: DeploymentConfiguration) -> None:
    port = config.tags.get("cairn.port")
    if port is not None and int(port) != workspace.settings.gateway_port:
        raise refuse(
            "LocalWebservice.deploy_configuration",
            "port",
            f"the gateway serves every endpoint on its port ({workspace.settings.gateway_port},"
            " gateway_port)",
        )


def deploy(
    workspace: WorkspaceBase,
    name: str,
    models: Sequence[Any],
    inference_config: InferenceConfig | None,
    deployment_config: DeploymentConfiguration | None,
    deployment_target: Any,
    overwrite: bool,
) -> Webservice:
    """Model.deploy's body: the endpoint (made unless it exists and ``overwrite``) and its
    ``default`` deployment (replaced when it exists)."""
    if inference_config is None:
        raise InvalidInput("Model.deploy needs an inference_config (the entry script)")
    config = deployment_config or DeploymentConfiguration(kind="ACI")
    _check_port(workspace, config)
    endpoints = workspace.core.endpoints
    tags = {k: v for k, v in config.tags.items() if k != "cairn.port"}
    exists = any(row["name"] == name for row in workspace._run(endpoints.list()))
    if exists and not overwrite:
        raise AlreadyExists(f"service {name} already exists: pass overwrite=True to replace it")
    if not exists:
        description = config.description or inference_config.description
        workspace._run(endpoints.create(name, description=description, tags=tags))
    assert inference_config.source_directory is not None
    workspace._run(
        endpoints.deploy(
            name,
            DEPLOYMENT,
            entry_script=str(inference_config.entry_script),
            source_directory=inference_config.source_directory,
            models=[(m.name, m.version) for m in models],
            environment=inference_config.environment_ref(),
            compute=_compute(deployment_target),
            replicas=config.replicas,
            cpu_cores=config.cpu_cores,
            memory_gb=config.memory_gb,
            request_timeout_s=config.request_timeout_s,
            rollout_timeout_s=config.rollout_timeout_s,
            max_concurrent_requests=config.max_concurrent_requests,
            max_queue_wait_s=config.max_queue_wait_s,
            description=config.description,
            tags={**tags, COMPUTE_TYPE: config.kind},
            all_traffic=True,
            scale=config.scale,
        )
    )
    return Webservice(workspace, name)


class Webservice:
    """A deployed service: ``Webservice(ws, name)`` looks one up."""

    @refuses(version="a service has no versions: get_logs() and state describe its deployment")
    def __init__(self, workspace: WorkspaceBase, name: str, version: int | None = None) -> None:
        self.workspace = workspace
        self.name = name
        self._data = workspace._run(workspace.core.endpoints.get(name))
        self.compute_type = _compute_type(self._data)
        self.scoring_uri = workspace.core.endpoints.scoring_uri(name)
        self.swagger_uri = self.scoring_uri.removesuffix("/score") + "/swagger.json"
        self.tags: dict[str, str] = self._data.get("tags", {})
        self.description: str = self._data.get("description", "")

    def _deployment(self) -> dict[str, Any]:
        return self.workspace._run(self.workspace.core.endpoints.deployment(self.name, DEPLOYMENT))

    @property
    def state(self) -> str:
        """``Transitioning`` until every replica ran ``init()``, then ``Healthy``; ``Failed``
        when one's ``init()`` raised."""
        return _STATES.get(self._deployment()["status"], "Unknown")

    @property
    def error(self) -> str:
        return str(self._deployment().get("error", ""))

    def wait_for_deployment(
        self, show_output: bool = False, timeout_sec: float | None = None
    ) -> None:
        """Wait until the service is Healthy or Failed (``show_output``: say where it is, and
        a failure's traceback)."""
        row = self.workspace._run(
            self.workspace.core.endpoints.wait(self.name, DEPLOYMENT, timeout=timeout_sec)
        )
        state = _STATES.get(row["status"], "Unknown")
        if show_output:
            sys.stdout.write(f"{self.name}: {state}\n")
            if row["error"]:
                sys.stdout.write(row["error"] + "\n")

    def run(self, input_data: Any) -> Any:
        """Score ``input_data`` (a JSON string, or what becomes one) through the gateway with
        the service's primary key; returns ``run()``'s answer."""
        import json

        body = input_data if isinstance(input_data, (str, bytes)) else json.dumps(input_data)
        return self.workspace._run(self.workspace.core.endpoints.invoke(self.name, body))

    def get_keys(self) -> tuple[str, str]:
        return self.workspace._run(self.workspace.core.endpoints.keys(self.name))

    @refuses(set_key="keys are made by Cairn")
    def regen_key(self, key: str, set_key: str | None = None) -> None:
        """Make a new ``Primary`` or ``Secondary`` key; the old one stops working at once."""
        slot = str(key).lower()
        self.workspace._run(self.workspace.core.endpoints.regen_key(self.name, slot))

    @refuses(init_containers="a replica has no init containers: its init() is in its logs")
    def get_logs(self, num_lines: int = 5000, init_containers: bool = False) -> str:
        """The last ``num_lines`` lines the replicas printed (a failed ``init()``'s traceback
        first)."""
        text = self.workspace._run(self.workspace.core.endpoints.logs(self.name, DEPLOYMENT))
        return "\n".join(text.splitlines()[-num_lines:])

    @refuses(
        image="give inference_config (and models) instead",
        auth_enabled="every Cairn endpoint answers only its keys or a member's token",
        autoscale_enabled="deploy again with deploy_configuration(autoscale_enabled=...)",
    )
    def update(
        self,
        image: Any = None,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str | None = None,
        auth_enabled: bool | None = None,
        models: list[Any] | None = None,
        inference_config: InferenceConfig | None = None,
        num_replicas: int | None = None,
        autoscale_enabled: bool | None = None,
    ) -> None:
        """New tags or description; new models, entry script or replica count redeploy the
        service (its new replicas replace the old ones)."""
        endpoints = self.workspace.core.endpoints
        if tags is not None or properties is not None or description is not None:
            merged = (
                None
                if tags is None and properties is None
                else {**(properties or {}), **(tags or {})}
            )
            self.workspace._run(endpoints.update(self.name, description=description, tags=merged))
        if models is None and inference_config is None and num_replicas is None:
            return
        current = self._deployment()["spec"]
        if inference_config is None:
            entry, source = current["entry_script"], None
        else:
            entry, source = str(inference_config.entry_script), inference_config.source_directory
        if source is None:
            raise InvalidInput(
                "update(models=..., num_replicas=...) needs the inference_config too: the"
                " source folder is uploaded again"
            )
        refs = (
            [(m["name"], m["version"]) for m in current["models"]]
            if models is None
            else [(m.name, m.version) for m in models]
        )
        env = (
            (current["environment_name"], current["environment_version"], None)
            if inference_config is None
            else inference_config.environment_ref()
        )
        self.workspace._run(
            endpoints.deploy(
                self.name,
                DEPLOYMENT,
                entry_script=entry,
                source_directory=Path(source),
                models=refs,
                environment=env,
                compute=current["compute"],
                replicas=current["replicas"] if num_replicas is None else num_replicas,
                cpu_cores=current["cpu_cores"],
                memory_gb=current["memory_gb"],
                request_timeout_s=current["request_timeout_s"],
                rollout_timeout_s=current.get("rollout_timeout_s", 1800.0),
                max_concurrent_requests=current.get("max_concurrent_requests", 1),
                max_queue_wait_s=current.get("max_queue_wait_s", 0.5),
                description=current["description"],
                tags=current["tags"],
                scale=None
                if current.get("scale") is None
                else msgspec.convert(current["scale"], ScaleSettings),
            )
        )

    def delete(self) -> None:
        """Stop the replicas and delete the service and its keys."""
        self.workspace._run(self.workspace.core.endpoints.delete(self.name))

    def serialize(self) -> dict[str, Any]:
        return dict(self._data)

    @staticmethod
    @refuses(
        image_name="services have no images",
        image_id="services have no images",
        model_id="give model_name",
    )
    def list(
        workspace: WorkspaceBase,
        compute_type: str | None = None,
        image_name: str | None = None,
        image_id: str | None = None,
        model_name: str | None = None,
        model_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> builtins.list[Webservice]:
        """The workspace's services, filtered by ``model_name`` (a deployment serves it),
        ``tags`` (every one given) and ``compute_type`` (``ACI``, ``AKS``, ``Local``: the
        configuration it was deployed with; ``Cairn``: made by other means)."""
        rows = workspace._run(workspace.core.endpoints.list())
        found = []
        for row in rows:
            served = {
                m["name"] for d in row["deployments"] for m in (d["spec"] or {}).get("models", [])
            }
            if model_name is not None and model_name not in served:
                continue
            if any(row["tags"].get(k) != v for k, v in (tags or {}).items()):
                continue
            if compute_type is not None and compute_type != _compute_type(row):
                continue
            found.append(Webservice(workspace, row["name"]))
        return found

    def __repr__(self) -> str:
        return f"Webservice(name={self.name!r}, scoring_uri={self.scoring_uri!r})"


def _compute_type(endpoint: dict[str, Any]) -> str:
    for dep in endpoint["deployments"]:
        if dep["name"] == DEPLOYMENT and dep["spec"]:
            return str(dep["spec"]["tags"].get(COMPUTE_TYPE, "Cairn"))
    return "Cairn"


def model_path(model_name: str, version: int | None) -> str:
    """``Model.get_model_path`` in a replica: the model's folder, or its one file."""
    import json

    dirs: dict[str, str] = json.loads(os.environ.get("CAIRN_MODEL_DIRS") or "{}")
    found = dirs.get(model_name)
    if found is None:
        where = ", ".join(sorted(dirs)) or "none: this is no deployment's replica"
        raise NotFound(f"model {model_name} is not deployed here (models: {where})")
    folder = Path(found)
    if version is not None and folder.name != str(version):
        raise NotFound(f"version {folder.name} of model {model_name} is deployed, not {version}")
    entries = list(folder.iterdir()) if folder.is_dir() else []
    if len(entries) == 1 and entries[0].is_file():
        return str(entries[0])
    return str(folder)
