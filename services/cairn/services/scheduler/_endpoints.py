"""Online endpoints, answered by the scheduler: a deployment's replicas are jobs it leases.

``endpoint.deploy`` resolves the replicas' job (the environment, the source snapshot, the
models as inputs), records the deployment with the run ids of its replicas (derived from the
command id, so a retried command submits the same runs) and submits each replica as a job
with ``JobSpec.serve``; replicas of an earlier spec are stopped as new ones become ready (a
rolling update: the deployment always has a ready replica). From there a replica is a
job like any other: ticket, claim, lease, and a lost one re-queued. ``endpoint.route`` tells
the gateway the traffic weights once the caller's key matches one of the endpoint's digests
(or the caller is a member of the workspace).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import AggregateCache, CommandContext, Connection, execute
from cairn.domain import endpoint as endpoints
from cairn.domain import experiment
from cairn.domain import run as runs
from cairn.errors import (
    CairnError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    Unauthenticated,
)
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.commands import Accepted, CancelRun, CreateExperiment, QueryResult
from cairn.proto.jobs import JobEnvironment, JobInput, JobSpec, SubmitJob, derived_id
from cairn.proto.serving import (
    ENDPOINT_COMMAND_TYPES,
    MAX_REPLICAS,
    CreateEndpoint,
    DeleteDeployment,
    DeleteEndpoint,
    DeploymentSpec,
    DeployModel,
    GetEndpoint,
    ListEndpoints,
    ReplicaSpec,
    ReportReplica,
    RouteEndpoint,
    SetEndpointKeys,
    UpdateEndpoint,
    deployment_id,
)
from cairn.proto.streams import EVENTS
from cairn.rpc import SERVICE_ACTOR, Request, Responder
from cairn.services.scheduler._pythons import Pythons
from cairn.services.scheduler._resolve import resolve_job
from cairn.settings import Settings

__all__ = ["REPLICA_MAX_ATTEMPTS", "Endpoints", "replica_command"]

log = get_logger("cairn.scheduler")
#: how often a replica may be lost before its run fails (a replica is meant to run for good;
#: re-queues back off up to 120 s)
REPLICA_MAX_ATTEMPTS = 1000
#: how often the reconcile pass brings the deployments' replicas to what their state says
CONVERGE_S = 5.0
#: who the scheduler's own decisions are made as
SCHEDULER_ACTOR = "cairn-scheduler"
#: where a replica's models land in its folder (``AZUREML_MODEL_DIR`` points there)
MODELS_DIR = "azureml-models"


def replica_command(entry_script: str) -> list[str]:
    """A replica's process: the serving loop over the entry script."""
    return ["python", "-m", "cairn.serving", entry_script]


def key_digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class Endpoints:
    """The endpoint commands and queries, for the scheduler (which submits the replicas)."""

    def __init__(
        self,
        conn: Connection,
        settings: Settings,
        cache: AggregateCache,
        pythons: Pythons,
        publish: Callable[[str, str, int, str], Awaitable[bool]],
    ) -> None:
        self.conn, self.settings, self.cache, self.pythons = conn, settings, cache, pythons
        self.publish = publish
        self.next_converge = 0.0
        #: rolling updates recorded without their time: when this scheduler first saw each
        self.rolls_seen: dict[tuple[str, str], tuple[str, float]] = {}
        #: a deployment's request telemetry windows (the autoscaler's, set by the service)
        self.load: Callable[[str, str], list[dict[str, float]]] = lambda ws, did: []
        self.responders = [
            Responder(
                conn,
                subjects=[subjects.command_filter("endpoint"), subjects.command_filter("replica")],
                queue="scheduler",
                types=ENDPOINT_COMMAND_TYPES,
                routes={
                    CreateEndpoint.VERB: self._create,
                    UpdateEndpoint.VERB: self._update,
                    SetEndpointKeys.VERB: self._keys,
                    DeleteEndpoint.VERB: self._delete,
                    DeployModel.VERB: self._deploy,
                    DeleteDeployment.VERB: self._undeploy,
                    ReportReplica.VERB: self._report,
                },
            ),
            Responder(
                conn,
                subjects=[subjects.query_filter("endpoint")],
                queue="scheduler",
                types=(GetEndpoint, ListEndpoints, RouteEndpoint),
                routes={
                    GetEndpoint.NAME: self._get,
                    ListEndpoints.NAME: self._list,
                    RouteEndpoint.NAME: self._route,
                },
            ),
        ]

    # -- looking up ---------------------------------------------------------------------------

    async def _endpoint(self, ws: str, name: str, *, fresh: bool = True) -> endpoints.EndpointState:
        state = await lookup.state(self.cache, endpoints.ENDPOINT, ws, name, fresh=fresh)
        if not state.live:
            raise NotFound(f"endpoint {name} does not exist")
        return state

    async def _deployment(self, ws: str, ep: str, name: str) -> endpoints.DeploymentState:
        did = deployment_id(ep, name)
        return await lookup.state(self.cache, endpoints.DEPLOYMENT, ws, did, fresh=True)

    async def _ids(self, ws: str, kind: str, prefix: str = "") -> list[str]:
        """The ids of aggregates of ``kind`` in ``ws`` (those starting ``prefix``), from the
        subjects EVENTS holds."""
        base = subjects.event(ws, kind, "x")[:-1]
        info = await self.conn.js.stream_info(EVENTS.name, subjects_filter=f"{base}*")
        found = (info.state.subjects or {}) if info.state else {}
        ids = [s[len(base) :] for s in found]
        return sorted(i for i in ids if i.startswith(prefix))

    async def _deployments(self, ws: str, ep: str) -> list[endpoints.DeploymentState]:
        states = []
        for did in await self._ids(ws, endpoints.DEPLOYMENT.kind, f"{ep}_"):
            state = await lookup.state(self.cache, endpoints.DEPLOYMENT, ws, did, fresh=True)
            if state.live:
                states.append(state)
        return states

    # -- commands -----------------------------------------------------------------------------

    async def _create(self, req: Request) -> Accepted:
        cmd: CreateEndpoint = req.body
        await lookup.require_workspace(self.cache, req.workspace)
        return await self._on_endpoint(req, cmd.endpoint, cmd)

    async def _on_endpoint(
        self, req: Request, name: str, command: endpoints.EndpointCommand
    ) -> Accepted:
        return await execute(req.context(), endpoints.ENDPOINT, name, command, cache=self.cache)

    async def _update(self, req: Request) -> Accepted:
        cmd: UpdateEndpoint = req.body
        live = [d.name for d in await self._deployments(req.workspace, cmd.endpoint)]
        resolved = endpoints.ResolvedTraffic(command=cmd, deployments=live)
        return await self._on_endpoint(req, cmd.endpoint, resolved)

    async def _keys(self, req: Request) -> Accepted:
        cmd: SetEndpointKeys = req.body
        return await self._on_endpoint(req, cmd.endpoint, cmd)

    async def _delete(self, req: Request) -> Accepted:
        cmd: DeleteEndpoint = req.body
        ws = req.workspace
        for dep in await self._deployments(ws, cmd.endpoint):
            delete = DeleteDeployment(
                command_id=derived_id("undeploy", cmd.command_id, dep.name),
                endpoint=cmd.endpoint,
                deployment=dep.name,
            )
            await self._retire(req, delete)
        return await self._on_endpoint(req, cmd.endpoint, cmd)

    async def _deploy(self, req: Request) -> Accepted:
        cmd: DeployModel = req.body
        ws, spec = req.workspace, cmd.spec
        await self._endpoint(ws, cmd.endpoint)
        if not 1 <= spec.replicas <= MAX_REPLICAS:
            raise InvalidInput(f"replicas must be between 1 and {MAX_REPLICAS}")
        if spec.request_timeout_s <= 0 or spec.request_timeout_s > 3600:
            raise InvalidInput("request_timeout_s must be within (0, 3600]")
        _check_scale(spec)
        experiment_name = f"endpoint-{cmd.endpoint}"
        await self._experiment(req, experiment_name)
        did = deployment_id(cmd.endpoint, cmd.deployment)
        before = await self._deployment(ws, cmd.endpoint, cmd.deployment)
        count = _starting_count(before, spec)
        replicas = [derived_id("replica", cmd.command_id, i) for i in range(count)]
        job = await self._resolve(ws, cmd, replicas[0], experiment_name)
        resolved = endpoints.ResolvedDeploy(
            command=cmd,
            job=job,
            replicas=replicas,
            experiment_name=experiment_name,
            at=time.time(),
        )
        accepted = await execute(
            req.context(), endpoints.DEPLOYMENT, did, resolved, cache=self.cache
        )
        state = await self._deployment(ws, cmd.endpoint, cmd.deployment)
        for run_id in state.replicas:
            await self._submit(req, run_id, experiment_name, job, spec.compute)
        # an earlier spec's replicas keep serving until new ones are ready (_roll)
        if cmd.all_traffic:
            update = UpdateEndpoint(
                command_id=derived_id("traffic", cmd.command_id),
                endpoint=cmd.endpoint,
                traffic={cmd.deployment: 100},
            )
            live = [d.name for d in await self._deployments(ws, cmd.endpoint)]
            ctx = self._ctx(req, update.command_id)
            resolved_traffic = endpoints.ResolvedTraffic(command=update, deployments=live)
            await execute(ctx, endpoints.ENDPOINT, cmd.endpoint, resolved_traffic, cache=self.cache)
        return accepted

    def _ctx(self, req: Request, command_id: str) -> CommandContext:
        return CommandContext(
            workspace=req.workspace,
            command_id=command_id,
            actor=req.actor,
            correlation_id=req.body.command_id,
        )

    async def _experiment(self, req: Request, name: str) -> None:
        create = CreateExperiment(
            command_id=derived_id("experiment", req.body.command_id), name=name
        )
        eid = subjects.name_to_id(name)
        ctx = self._ctx(req, create.command_id)
        await execute(ctx, experiment.AGGREGATE, eid, create, cache=self.cache)

    async def _resolve(
        self, ws: str, cmd: DeployModel, run_id: str, experiment_name: str
    ) -> JobSpec:
        """The replicas' job: the serving loop over the entry script, the models as inputs
        under ``azureml-models/<name>/<version>``, the environment resolved."""
        spec = cmd.spec
        inputs = [
            JobInput(
                name=f"model{i}",
                model=m.name,
                version=m.version,
                path_on_compute=f"{MODELS_DIR}/{m.name}/{m.version}",
            )
            for i, m in enumerate(spec.models)
        ]
        serve = ReplicaSpec(
            endpoint=cmd.endpoint,
            deployment=cmd.deployment,
            entry_script=spec.entry_script,
            models=spec.models,
            request_timeout_s=spec.request_timeout_s,
            max_concurrent_requests=spec.max_concurrent_requests,
            max_queue_wait_s=spec.max_queue_wait_s,
            data_collector=spec.data_collector,
        )
        job = JobSpec(
            command=replica_command(spec.entry_script),
            snapshot=spec.snapshot,
            snapshot_area=spec.snapshot_area,
            environment=None if spec.environment is None else JobEnvironment(spec=spec.environment),
            env_vars=spec.env_vars,
            max_attempts=REPLICA_MAX_ATTEMPTS,
            inputs=inputs,
            serve=serve,
        )
        submit = SubmitJob(
            command_id=cmd.command_id,
            run_id=run_id,
            experiment_name=experiment_name,
            compute=spec.compute,
            job=job,
            environment_name=spec.environment_name,
            environment_version=spec.environment_version,
        )
        if spec.environment is not None and spec.environment_name is not None:
            raise InvalidInput("name an environment or give one inline, not both")
        return await resolve_job(self.cache, self.settings, ws, submit, self.pythons)

    async def _submit(
        self, req: Request, run_id: str, experiment_name: str, job: JobSpec, compute: str
    ) -> None:
        await self.submit_replica(
            req.workspace, run_id, experiment_name, job, compute, lambda c: self._ctx(req, c)
        )

    async def submit_replica(
        self,
        ws: str,
        run_id: str,
        experiment_name: str,
        job: JobSpec,
        compute: str,
        ctx: Callable[[str], CommandContext],
    ) -> None:
        """Submit a replica's run (its command id derived from the run id: once)."""
        submit = SubmitJob(
            command_id=derived_id("replica-submit", run_id),
            run_id=run_id,
            experiment_name=experiment_name,
            compute=compute,
            job=job,
            display_name=f"{job.serve.deployment} replica" if job.serve else None,
        )
        resolved = runs.SubmitResolvedJob(
            command=submit, experiment_id=subjects.name_to_id(experiment_name), job=job
        )
        accepted = await execute(
            ctx(submit.command_id), runs.AGGREGATE, run_id, resolved, cache=self.cache, new=True
        )
        if not accepted.replayed:
            try:
                await self.publish(ws, run_id, 1, compute)
            except Exception:  # the reconcile loop publishes it
                pass

    async def _cancel(self, req: Request, run_id: str, reason: str) -> None:
        await self.cancel_replica(run_id, reason, lambda c: self._ctx(req, c))

    async def cancel_replica(
        self, run_id: str, reason: str, ctx: Callable[[str], CommandContext]
    ) -> None:
        """Stop a replica's run (a no-op once it ended)."""
        cancel = CancelRun(command_id=derived_id("retire", run_id), run_id=run_id, reason=reason)
        try:
            await execute(ctx(cancel.command_id), runs.AGGREGATE, run_id, cancel, cache=self.cache)
        except (InvalidTransition, NotFound):  # it ended already
            pass

    async def _undeploy(self, req: Request) -> Accepted:
        cmd: DeleteDeployment = req.body
        state = await self._endpoint(req.workspace, cmd.endpoint)
        if state.mirror.get(cmd.deployment):
            raise InvalidInput(
                f"endpoint {cmd.endpoint} mirrors {state.mirror[cmd.deployment]}% of its"
                f" requests to deployment {cmd.deployment}: stop that first"
                " (endpoint update --mirror-traffic '')"
            )
        if state.traffic.get(cmd.deployment):
            raise InvalidInput(
                f"deployment {cmd.deployment} has {state.traffic[cmd.deployment]}% of endpoint"
                f" {cmd.endpoint}'s traffic: move it first (endpoint update --traffic)"
            )
        return await self._retire(req, cmd)

    async def _retire(self, req: Request, cmd: DeleteDeployment) -> Accepted:
        did = deployment_id(cmd.endpoint, cmd.deployment)
        before = await self._deployment(req.workspace, cmd.endpoint, cmd.deployment)
        ctx = self._ctx(req, cmd.command_id)
        retire = endpoints.RetireDeployment(command=cmd)
        accepted = await execute(ctx, endpoints.DEPLOYMENT, did, retire, cache=self.cache)
        for run_id in [*before.replicas, *before.retired]:  # mid-rollout, old ones run too
            await self._cancel(req, run_id, f"deployment {cmd.deployment} was deleted")
        return accepted

    async def _report(self, req: Request) -> Accepted:
        """A replica's start; a ready one of a new spec retires replicas of earlier ones, a
        failed one mid-roll rolls the deployment back."""
        cmd: ReportReplica = req.body
        did = deployment_id(cmd.endpoint, cmd.deployment)
        if cmd.phase == "failed":
            return await self._failed(req, cmd)
        accepted = await execute(req.context(), endpoints.DEPLOYMENT, did, cmd, cache=self.cache)
        state = await self._deployment(req.workspace, cmd.endpoint, cmd.deployment)
        await self._roll(req, state)
        return accepted

    async def _failed(self, req: Request, cmd: ReportReplica) -> Accepted:
        """A replica that could not start. Mid-roll, the previous spec's replicas come back:
        those still running as they are, each one the roll stopped as a new run (its id
        derived from this report); then the new spec's replicas are stopped as the previous
        ones are ready (``_roll``), so the endpoint never has none."""
        ws = req.workspace
        did = deployment_id(cmd.endpoint, cmd.deployment)
        before = await self._deployment(ws, cmd.endpoint, cmd.deployment)
        restore = await self._restore(ws, before, f"{cmd.run_id}-{cmd.attempt}")
        command = endpoints.ReplicaFailed(
            command=cmd,
            restore=restore,
            replacement=derived_id("replace", did, cmd.run_id),
            at=time.time(),
        )
        accepted = await execute(
            req.context(), endpoints.DEPLOYMENT, did, command, cache=self.cache
        )
        state = await self._deployment(ws, cmd.endpoint, cmd.deployment)
        if before.previous is None or state.previous is not None or not state.update_error:
            return accepted  # no roll-back: the deployment failed, or the replica is replaced
        if not state.job or not state.spec:
            return accepted
        log.warning("deployment_rolled_back", deployment=did, run_id=cmd.run_id)
        fresh = set(restore.values())
        for run_id in state.replicas:
            if run_id in fresh:
                await self._submit(
                    req, run_id, state.experiment_name, state.job, state.spec.compute
                )
        await self._roll(req, state)
        return accepted

    async def _restore(
        self, ws: str, state: endpoints.DeploymentState, cause: str
    ) -> dict[str, str]:
        """For a roll-back: each previous replica the roll already stopped, and the new run
        that takes its place (its id derived from ``cause``)."""
        restore: dict[str, str] = {}
        if state.previous is not None:
            did = deployment_id(state.endpoint, state.name)
            for run_id in state.previous.replicas:
                if not await self._running(ws, run_id):
                    restore[run_id] = derived_id("restore", did, cause, run_id)
        return restore

    async def _running(self, ws: str, run_id: str) -> bool:
        """Whether the run is still going (not ended, not asked to stop)."""
        try:
            found = await lookup.run_state(self.cache, ws, run_id, fresh=True)
        except NotFound:
            return False
        return not found.status.terminal and found.status != runs.RunStatus.CANCEL_REQUESTED

    async def stable(self, ws: str, run_id: str, attempt: int, started_at: float | None) -> bool:
        """Whether attempt ``attempt`` of a serving replica had been ready, and running for
        ``replica_stable_s``, before it was lost (then its back-off starts over)."""
        if started_at is None or time.time() - started_at < self.settings.replica_stable_s:
            return False
        try:
            run = await lookup.run_state(self.cache, ws, run_id)
        except NotFound:
            return False
        serve = None if run.job is None else run.job.serve
        if serve is None:
            return False
        state = await self._deployment(ws, serve.endpoint, serve.deployment)
        return state.ready.get(run_id) == attempt

    async def _roll(self, req: Request, state: endpoints.DeploymentState) -> None:
        await self.roll(req.workspace, state, lambda c: self._ctx(req, c))

    async def roll(
        self,
        ws: str,
        state: endpoints.DeploymentState,
        ctx: Callable[[str], CommandContext],
        strays: list[str] | None = None,
    ) -> None:
        """A rolling update's next step. Nothing is stopped before a replica of the new spec
        is ready; then the earlier replicas still running are stopped down to (new replicas
        - ready ones - 1): one new replica ready stops an old one, so that a new replica
        finds a free slot even where the agents have just one to spare, and the deployment
        never has none ready. ``strays``: running replicas of the deployment that its state
        no longer names (earlier specs' beyond the retired ones it keeps by id), stopped
        first."""
        ready = len(set(state.ready) & set(state.replicas))
        if not ready or not (state.retired or strays):
            return
        keep = max(0, len(state.replicas) - ready - 1)
        current = set(state.replicas)
        running = list(strays or [])
        running += [r for r in state.retired if r not in current and await self._running(ws, r)]
        for run_id in running[: max(0, len(running) - keep)]:
            await self.cancel_replica(run_id, f"deployment {state.name} was replaced", ctx)

    async def converge(self, active: list[tuple[str, str]]) -> None:
        """The reconcile pass's step for deployments (every ``CONVERGE_S``): each one's
        replica runs are brought to what its state says, so that whatever a decision left
        undone (a scheduler stopped between ``DeploymentScaled``/``DeploymentRolledBack``
        and its submits or stops, a submit refused) is done by any replica of the scheduler,
        from the log. Every replica it names that was never submitted is submitted (the
        submit's id derives from the run id: once); earlier replicas are stopped as a roll
        has it (``roll``), those of the deployment still running that it no longer names
        too; a deleted deployment's running replicas are stopped. ``active``: the runs not
        ended (workspace, run id)."""
        now = time.time()
        if now < self.next_converge:
            return
        self.next_converge = now + CONVERGE_S
        running: dict[tuple[str, str], list[str]] = {}
        for ws, run_id in active:
            try:
                run = await lookup.run_state(self.cache, ws, run_id)
            except NotFound:
                continue
            serve = None if run.job is None else run.job.serve
            if serve is not None and run.status != runs.RunStatus.CANCEL_REQUESTED:
                key = (ws, deployment_id(serve.endpoint, serve.deployment))
                running.setdefault(key, []).append(run_id)
        base = subjects.events_of_kind(endpoints.DEPLOYMENT.kind)
        info = await self.conn.js.stream_info(EVENTS.name, subjects_filter=base)
        for subject in (info.state.subjects or {}) if info.state else {}:
            parts = subject.split(".")
            key = (parts[2], parts[-1])
            try:
                await self._converge(key, running.get(key, []))
            except CairnError as exc:  # the next pass tries again
                log.warning("deployment_converge_failed", deployment=key[1], error=exc.message)

    async def _converge(self, key: tuple[str, str], running: list[str]) -> None:
        ws, did = key
        state = await lookup.state(self.cache, endpoints.DEPLOYMENT, ws, did, fresh=True)
        if not state.exists:
            return

        def ctx(cid: str) -> CommandContext:
            return CommandContext(
                workspace=ws, command_id=cid, actor=SCHEDULER_ACTOR, correlation_id=cid
            )

        if not state.live:
            for run_id in running:
                await self.cancel_replica(run_id, f"deployment {state.name} was deleted", ctx)
            return
        state = await self._timeout(key, state, ctx)
        await self._replace_ended(key, state, ctx)
        state = await lookup.state(self.cache, endpoints.DEPLOYMENT, ws, did, fresh=True)
        if state.job is not None and state.spec is not None:
            for run_id in state.replicas:
                if not await self._exists(ws, run_id):
                    if time.time() < endpoints.replace_after(state):
                        continue  # a replacement, after its back-off
                    log.info("replica_submitted", deployment=did, run_id=run_id)
                    await self.submit_replica(
                        ws, run_id, state.experiment_name, state.job, state.spec.compute, ctx
                    )
        named = {*state.replicas, *state.retired}
        if state.previous is not None:
            named |= set(state.previous.replicas)
        await self.roll(ws, state, ctx, [r for r in running if r not in named])

    async def _timeout(
        self,
        key: tuple[str, str],
        state: endpoints.DeploymentState,
        ctx: Callable[[str], CommandContext],
    ) -> endpoints.DeploymentState:
        """A rolling update past its spec's ``rollout_timeout_s`` with no new replica ready
        is rolled back (counted from the update's time; for an update recorded without one,
        from this scheduler's first look at it)."""
        ws, did = key
        if state.previous is None or state.status != endpoints.DeploymentStatus.CREATING:
            self.rolls_seen.pop(key, None)
            return state
        now = time.time()
        roll = derived_id("roll", *state.replicas)
        seen = self.rolls_seen.get(key)
        if seen is None or seen[0] != roll:
            seen = self.rolls_seen[key] = (roll, now)
        since = state.rolling_since or seen[1]
        if state.spec is None or now - since < state.spec.rollout_timeout_s:
            return state
        command = endpoints.RollTimedOut(
            at=now, since=since, restore=await self._restore(ws, state, f"timeout-{roll}")
        )
        await execute(
            ctx(derived_id("roll-timeout", ws, did, roll)),
            endpoints.DEPLOYMENT,
            did,
            command,
            cache=self.cache,
        )
        after = await lookup.state(self.cache, endpoints.DEPLOYMENT, ws, did, fresh=True)
        if after.previous is None:
            log.warning("deployment_rolled_back", deployment=did, error=after.update_error)
        return after

    async def _replace_ended(
        self,
        key: tuple[str, str],
        state: endpoints.DeploymentState,
        ctx: Callable[[str], CommandContext],
    ) -> None:
        """Each replica a serving deployment names whose run ended or is being stopped (a
        roll that stopped a replica a roll-back kept, a replica that failed for good) is
        replaced."""
        if not state.serving:
            return
        ws, did = key
        for run_id in state.replicas:
            try:
                run = await lookup.run_state(self.cache, ws, run_id, fresh=True)
            except NotFound:
                continue
            if not run.status.terminal and run.status != runs.RunStatus.CANCEL_REQUESTED:
                continue
            command = endpoints.ReplaceReplica(
                run_id=run_id,
                replacement=derived_id("replace", did, run_id),
                error=f"its run is {run.status.value}",
                at=time.time(),
            )
            log.warning("replica_replaced", deployment=did, run_id=run_id, error=command.error)
            cid = derived_id("replace-ended", ws, did, run_id)
            await execute(ctx(cid), endpoints.DEPLOYMENT, did, command, cache=self.cache)

    async def _exists(self, ws: str, run_id: str) -> bool:
        try:
            await lookup.run_state(self.cache, ws, run_id, fresh=True)
        except NotFound:
            return False
        return True

    # -- queries ------------------------------------------------------------------------------

    async def _route(self, req: Request) -> QueryResult:
        """The weights, for a member or for a caller holding one of the keys (the gateway's
        scoring user: outside the people's account, it is trusted with nothing else)."""
        q: RouteEndpoint = req.body
        state = await lookup.state(
            self.cache, endpoints.ENDPOINT, req.workspace, q.endpoint, fresh=True
        )
        if req.actor == SERVICE_ACTOR:
            given = key_digest(q.key) if q.key is not None else ""
            if not state.live or not any(hmac.compare_digest(given, h) for h in state.key_hashes):
                raise Unauthenticated(f"no valid key for endpoint {q.endpoint}")
        elif not state.live:
            raise NotFound(f"endpoint {q.endpoint} does not exist")
        timeouts = {}
        named = [] if q.deployment is None else [q.deployment]
        for name in [*state.traffic, *state.mirror, *named]:
            dep = await self._deployment(req.workspace, q.endpoint, name)
            if dep.live and dep.spec is not None:
                timeouts[name] = dep.spec.request_timeout_s
        if q.deployment is not None and q.deployment not in timeouts:
            raise NotFound(f"endpoint {q.endpoint} has no deployment {q.deployment}")
        data = {"traffic": state.traffic, "mirror": state.mirror, "timeouts": timeouts}
        return QueryResult(seq=0, data=data)

    async def _get(self, req: Request) -> QueryResult:
        q: GetEndpoint = req.body
        state = await self._endpoint(req.workspace, q.endpoint)
        deployments = [
            self._row(req.workspace, d) for d in await self._deployments(req.workspace, q.endpoint)
        ]
        return QueryResult(seq=0, data=_endpoint_row(state, deployments))

    def _row(self, ws: str, state: endpoints.DeploymentState) -> dict[str, Any]:
        row = _deployment_row(state)
        row["load"] = self.load(ws, deployment_id(state.endpoint, state.name))
        return row

    async def _list(self, req: Request) -> QueryResult:
        rows = []
        for name in await self._ids(req.workspace, endpoints.ENDPOINT.kind):
            state = await lookup.state(
                self.cache, endpoints.ENDPOINT, req.workspace, name, fresh=True
            )
            if state.live:
                deployments = [
                    self._row(req.workspace, d)
                    for d in await self._deployments(req.workspace, name)
                ]
                rows.append(_endpoint_row(state, deployments))
        return QueryResult(seq=0, data=rows)


def _starting_count(before: endpoints.DeploymentState, spec: DeploymentSpec) -> int:
    """How many replicas a spec starts with: ``spec.replicas``; for an update of an
    autoscaled deployment to an autoscaled spec, the count it has now, held within the new
    bounds (an update under load keeps its capacity, as Kubernetes keeps the horizontal
    autoscaler's count across a rollout)."""
    scale = spec.scale
    if not before.live or before.spec is None or before.spec.scale is None or scale is None:
        return spec.replicas
    return max(scale.min_replicas, min(scale.max_replicas, len(before.replicas)))


def _check_scale(spec: DeploymentSpec) -> None:
    scale = spec.scale
    if scale is None:
        return
    if not 1 <= scale.min_replicas <= scale.max_replicas <= MAX_REPLICAS:
        raise InvalidInput(
            f"scale: min_replicas ({scale.min_replicas}) and max_replicas"
            f" ({scale.max_replicas}) must be within 1 <= min <= max <= {MAX_REPLICAS}"
        )
    if not scale.min_replicas <= spec.replicas <= scale.max_replicas:
        raise InvalidInput(
            f"replicas ({spec.replicas}), the count an autoscaled deployment starts with, must be"
            f" within [{scale.min_replicas}, {scale.max_replicas}]"
        )


def _endpoint_row(
    state: endpoints.EndpointState, deployments: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": state.name,
        "description": state.description,
        "tags": state.tags,
        "traffic": state.traffic,
        "mirror_traffic": state.mirror,
        "auth_mode": "key",
        "deployments": deployments,
    }


def _deployment_row(state: endpoints.DeploymentState) -> dict[str, Any]:
    return {
        "name": state.name,
        "endpoint": state.endpoint,
        "status": state.status.value,
        "replicas": list(state.replicas),
        "ready": dict(state.ready),
        "retired": list(state.retired),
        "experiment_name": state.experiment_name,
        "error": state.error,
        #: the last update that failed and was rolled back ("" once a spec rolls out)
        "update_error": state.update_error,
        "rolling_out": state.previous is not None,
        "scalings": state.scalings,
        #: replicas replaced so far (gone for good while the deployment served)
        "replacements": state.replacements,
        "spec": msgspec.to_builtins(state.spec) if state.spec is not None else None,
    }
