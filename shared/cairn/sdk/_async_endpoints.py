"""The async core of online endpoints (``ws.endpoints``; ``Webservice`` and ``Model.deploy``
wrap it, as does ``cairn online-endpoint``).

An endpoint's two keys are made here and kept as workspace secrets
(``endpoint-<name>-primary``, ``-secondary``): sealed by the registry, every read recorded.
The endpoint itself records only their sha256 digests, which is what the gateway's key check
compares. Regenerating a key sets the secret's next version and the endpoint's digest: the
old key stops working at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from cairn.errors import CairnError, InvalidInput, NotFound, PermissionDenied, Unavailable
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.metrics import GetMetrics, MetricHistory
from cairn.proto.serving import (
    CreateEndpoint,
    DataCollector,
    DeleteDeployment,
    DeleteEndpoint,
    DeploymentSpec,
    DeployModel,
    GetEndpoint,
    ListEndpoints,
    ModelRef,
    ScaleSettings,
    SetEndpointKeys,
    UpdateEndpoint,
    check_timeouts,
)
from cairn.sdk._async_secrets import AsyncSecrets
from cairn.sdk._jobs import print_logs, upload_snapshot
from cairn.sdk._session import Session, new_id
from cairn.tokens import TOKEN_PREFIX

__all__ = ["SLOTS", "AsyncEndpoints", "key_digest", "new_key"]

SLOTS = ("primary", "secondary")
#: the error an answer's status becomes (others: ``CairnError``, with the answer's message)
_ERRORS: dict[int, type[CairnError]] = {
    400: InvalidInput,
    403: PermissionDenied,
    404: NotFound,
    413: InvalidInput,
    503: Unavailable,
}


def new_key() -> str:
    """A fresh endpoint key (never shaped like a Cairn token)."""
    while (key := secrets.token_urlsafe(32)).startswith(TOKEN_PREFIX):  # pragma: no cover
        pass
    return key


def key_digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _total(value: Any) -> float:
    """A metric's values added up (one value, or a list of them)."""
    if value is None:
        return 0.0
    if isinstance(value, list):
        return float(sum(value))
    return float(value)


def _secret(endpoint: str, slot: str) -> str:
    return f"endpoint-{endpoint}-{slot}"


class AsyncEndpoints:
    """``ws.endpoints``: each call is one or a few commands and queries."""

    def __init__(self, session: Session, secrets_: AsyncSecrets) -> None:
        self._session = session
        self._secrets = secrets_

    # -- endpoints ----------------------------------------------------------------------------

    async def create(
        self, name: str, *, description: str = "", tags: dict[str, str] | None = None
    ) -> dict[str, str]:
        """A new endpoint with two new keys (kept as workspace secrets); returns the keys. The
        endpoint is recorded first: a create refused (it exists) leaves its keys as they were."""
        keys = {slot: new_key() for slot in SLOTS}
        await self._session.send(
            CreateEndpoint(
                command_id=new_id(),
                endpoint=name,
                key_hashes=[key_digest(keys[s]) for s in SLOTS],
                description=description,
                tags=tags or {},
            )
        )
        for slot, key in keys.items():
            await self._secrets.set(_secret(name, slot), key)
        return keys

    async def get(self, name: str) -> dict[str, Any]:
        q = GetEndpoint(endpoint=name, min_seq=self._session.seen_seq)
        data: dict[str, Any] = (await self._session.client.ask(q)).data
        return data

    async def list(self) -> list[dict[str, Any]]:
        q = ListEndpoints(min_seq=self._session.seen_seq)
        rows: list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows

    async def update(
        self,
        name: str,
        *,
        traffic: dict[str, int] | None = None,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        mirror_traffic: dict[str, int] | None = None,
    ) -> None:
        """New traffic weights (adding up to 100), description, tags, or mirrored share
        (``{deployment: percent}``, ``{}`` for none); what is None stays."""
        await self._session.send(
            UpdateEndpoint(
                command_id=new_id(),
                endpoint=name,
                traffic=traffic,
                description=description,
                tags=tags,
                mirror_traffic=mirror_traffic,
            )
        )

    async def delete(self, name: str) -> None:
        """Delete the endpoint, stop its deployments' replicas, and delete its keys."""
        await self._session.send(DeleteEndpoint(command_id=new_id(), endpoint=name))
        for slot in SLOTS:
            try:
                await self._secrets.delete(_secret(name, slot))
            except CairnError:  # made elsewhere without them, or deleted already
                pass

    async def keys(self, name: str) -> tuple[str, str]:
        """The primary and secondary keys (each read recorded)."""
        await self.get(name)  # the endpoint must exist
        found = [await self._secrets.get(_secret(name, slot)) for slot in SLOTS]
        return found[0], found[1]

    async def regen_key(self, name: str, slot: str) -> str:
        """A new key in ``slot`` (``primary`` or ``secondary``); the old one stops working."""
        if slot == "primary":
            which: Literal["primary", "secondary"] = "primary"
        elif slot == "secondary":
            which = "secondary"
        else:
            raise InvalidInput(f"key must be Primary or Secondary, not {slot!r}")
        key = new_key()
        # the endpoint first: a refused regen (no such endpoint) leaves the stored key alone
        await self._session.send(
            SetEndpointKeys(
                command_id=new_id(),
                endpoint=name,
                slot=which,
                key_hash=key_digest(key),
            )
        )
        await self._secrets.set(_secret(name, slot), key)
        return key

    # -- deployments --------------------------------------------------------------------------

    async def deploy(
        self,
        endpoint: str,
        deployment: str,
        *,
        entry_script: str,
        source_directory: Path,
        models: Sequence[tuple[str, int]],
        environment: tuple[str | None, int | None, EnvironmentSpec | None] = (None, None, None),
        compute: str = "local",
        replicas: int = 1,
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        env_vars: dict[str, str] | None = None,
        request_timeout_s: float = 60.0,
        description: str = "",
        tags: dict[str, str] | None = None,
        all_traffic: bool = False,
        max_concurrent_requests: int = 1,
        max_queue_wait_s: float = 0.5,
        scale: ScaleSettings | None = None,
        data_collector: DataCollector | None = None,
        rollout_timeout_s: float = 1800.0,
    ) -> None:
        """Create deployment ``deployment`` of ``endpoint`` or replace its spec: the source
        folder is uploaded as a job's snapshot is; its replicas start on ``compute``.
        ``request_timeout_s`` bounds one ``run()`` (504 past it; at most
        ``MAX_REQUEST_TIMEOUT_S``, 300); ``rollout_timeout_s`` a rolling update to this spec
        (no new replica ready within it: rolled back; at most a day). Each
        replica calls ``run()`` for up to ``max_concurrent_requests`` requests at once (worker
        threads); as many more wait up to ``max_queue_wait_s`` (then 503), beyond them 429.
        ``scale``: autoscale between its bounds (``replicas`` is the count it starts with).
        ``data_collector``: what its replicas collect of their requests, and where."""
        check_timeouts(request_timeout_s=request_timeout_s, rollout_timeout_s=rollout_timeout_s)
        source = Path(source_directory)
        script = Path(entry_script)
        if script.is_absolute():
            try:
                script = script.relative_to(source.absolute())
            except ValueError:
                raise InvalidInput(
                    f"entry script {entry_script} is not inside {source_directory}"
                ) from None
        if not (source / script).is_file():
            raise InvalidInput(f"no entry script {script} in {source_directory}")
        digest, area = await upload_snapshot(self._session.client, source, self._session.snapshots)
        env_name, env_version, inline = environment
        spec = DeploymentSpec(
            models=[ModelRef(name=n, version=v) for n, v in models],
            entry_script=script.as_posix(),
            snapshot=digest,
            snapshot_area=area,
            environment_name=env_name,
            environment_version=env_version,
            environment=inline,
            compute=compute,
            replicas=replicas,
            cpu_cores=cpu_cores,
            memory_gb=memory_gb,
            env_vars=env_vars or {},
            request_timeout_s=request_timeout_s,
            max_concurrent_requests=max_concurrent_requests,
            max_queue_wait_s=max_queue_wait_s,
            description=description,
            tags=tags or {},
            scale=scale,
            data_collector=data_collector,
            rollout_timeout_s=rollout_timeout_s,
        )
        await self._session.send(
            DeployModel(
                command_id=new_id(),
                endpoint=endpoint,
                deployment=deployment,
                spec=spec,
                all_traffic=all_traffic,
            )
        )

    async def delete_deployment(self, endpoint: str, deployment: str) -> None:
        await self._session.send(
            DeleteDeployment(command_id=new_id(), endpoint=endpoint, deployment=deployment)
        )

    async def deployment(self, endpoint: str, deployment: str) -> dict[str, Any]:
        for row in (await self.get(endpoint))["deployments"]:
            if row["name"] == deployment:
                found: dict[str, Any] = row
                return found
        raise NotFound(f"endpoint {endpoint} has no deployment {deployment}")

    async def wait(
        self, endpoint: str, deployment: str, *, timeout: float | None = None, poll_s: float = 0.5
    ) -> dict[str, Any]:
        """The deployment once it is ``Succeeded`` (every replica ready) or ``Failed``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = await self.deployment(endpoint, deployment)
            if row["status"] in ("Succeeded", "Failed", "Deleted"):
                return row
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"deployment {deployment} is still {row['status']}")
            await asyncio.sleep(poll_s)

    async def logs(self, endpoint: str, deployment: str) -> str:
        """What the deployment's replicas printed (the current ones; a failed deployment's
        error, its traceback, first)."""
        row = await self.deployment(endpoint, deployment)
        parts: list[str] = []
        if row["error"]:
            parts.append(row["error"])
        for run_id in row["replicas"]:
            chunks: list[str] = []
            await print_logs(self._session, run_id, chunks.append)
            parts.append(f"--- replica {run_id} ---\n{''.join(chunks)}")
        return "\n".join(parts)

    async def request_metrics(self, endpoint: str) -> dict[str, dict[str, Any]]:
        """Per deployment: the requests its replicas (current and retired) answered, by
        status, and their mean time in the replica, from the replicas' run metrics (logged
        by their agents every few seconds)."""
        out: dict[str, dict[str, Any]] = {}
        for dep in (await self.get(endpoint))["deployments"]:
            count, latency, statuses = 0, 0.0, Counter[str]()
            for run_id in [*dep["replicas"], *dep["retired"]]:
                found = await self._metric_sums(run_id)
                count += int(found.get("requests", 0))
                latency += found.get("latency_ms_total", 0.0)
                for name, value in found.items():
                    if name.startswith("status_"):
                        statuses[name.removeprefix("status_")] += int(value)
            out[dep["name"]] = {
                "requests": count,
                "status_codes": dict(sorted(statuses.items())),
                "latency_ms_mean": round(latency / count, 3) if count else None,
            }
        return out

    async def _metric_sums(self, run_id: str) -> dict[str, float]:
        """Each scalar metric of the run, its points added up."""
        client = self._session.client
        sums: dict[str, float] = {}
        for name, entry in (await client.ask(GetMetrics(run_id=run_id))).data.items():
            if "value" in entry:  # logged once
                sums[name] = _total(entry["value"])
                continue
            after: tuple[int, int, int] | None = None
            total = 0.0
            while True:
                q = MetricHistory(run_id=run_id, name=name, after=after)
                page = (await client.ask(q)).data
                total += sum(_total(p[2]) for p in page["points"])
                if page["next"] is None:
                    break
                after = (page["next"][0], page["next"][1], page["next"][2])
            sums[name] = total
        return sums

    # -- scoring ------------------------------------------------------------------------------

    def scoring_uri(self, endpoint: str) -> str:
        settings = self._session.settings
        base = settings.gateway_url or f"http://{settings.gateway_host}:{settings.gateway_port}"
        return f"{base.rstrip('/')}/endpoints/{self._session.name}/{endpoint}/score"

    async def invoke(
        self,
        endpoint: str,
        body: str | bytes,
        *,
        key: str | None = None,
        deployment: str | None = None,
    ) -> Any:
        """POST ``body`` to the endpoint's scoring address with ``key`` (default: its primary
        key, read from the workspace's secrets) and return the decoded answer; an answer
        other than 200 raises with the replica's message. ``deployment``: that one answers,
        whatever the traffic (the ``azureml-model-deployment`` header)."""
        if key is None:
            key = (await self.keys(endpoint))[0]
        data = body.encode() if isinstance(body, str) else body
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if deployment is not None:
            headers["azureml-model-deployment"] = deployment
        async with httpx.AsyncClient(timeout=self._session.settings.request_timeout + 60) as http:
            try:
                reply = await http.post(self.scoring_uri(endpoint), content=data, headers=headers)
            except httpx.HTTPError as exc:
                raise Unavailable(f"the gateway at {self.scoring_uri(endpoint)}: {exc}") from exc
        if reply.status_code == 401:
            raise PermissionDenied(f"endpoint {endpoint} refused the key")
        try:
            answer = reply.json()
        except ValueError:
            answer = reply.text
        if reply.status_code != 200:
            if isinstance(answer, dict):  # a replica's {"error"} or the gateway's {"message"}
                message = answer.get("error") or answer.get("message") or answer
            else:
                message = answer
            error = _ERRORS.get(reply.status_code, CairnError)
            raise error(f"endpoint {endpoint} answered {reply.status_code}: {message}")
        return answer
