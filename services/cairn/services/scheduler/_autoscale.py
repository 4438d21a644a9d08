"""Autoscaling of online deployments (``DeploymentSpec.scale``), a part of the scheduler's
reconcile pass.

**Telemetry.** A replica's agent logs what it answered as its run's metrics every few seconds
(``requests``, ``latency_ms_total``: the time its requests spent in the replica). The
autoscaler follows the metric subjects of the current replicas of every autoscaled
deployment and adds each batch into fixed windows of ``BUCKET_S`` seconds per deployment, of
which it keeps the last ``BUCKETS`` (bounded, whatever the traffic). A replica runs up to its
``max_concurrent_requests`` at once, so the time its requests spent in it over a span,
divided by the span and by that count, is its utilisation (100 %: that many in flight all the
time).

**Decision.** Every ``polling_interval_s`` the utilisation over the last whole windows that
cover ``window_s`` (``max(polling_interval_s, MIN_WINDOW_S)``: two of each replica's reports)
is compared with the target, as Kubernetes' horizontal autoscaler does:
``desired = ceil(replicas * utilisation / target)``, kept as is within ``TOLERANCE`` of the
target, then held within ``[min_replicas, max_replicas]``. The window still filling is left
out, and the seconds summed are divided by the span of the windows summed. The measured span
starts only once the current replicas are all followed and ready: nothing is decided while a
replica is starting, while the deployment is rolling out a new spec, until a whole span has
passed since the last change's replicas were ready (a new replica's start-up is not idle time,
a removed one's busy time is not counted against fewer replicas; after a start of the
scheduler the windows fill again from new reports), or within ``cooldown_s`` of the last
change. A change is the ``ScaleDeployment`` command, whose ``DeploymentScaled`` event records
the numbers compared; new replicas are submitted, removed ones (the newest) stopped, their
requests answered first. What a change leaves to do is also done by the scheduler's
reconcile pass from the deployment's state (``Endpoints.converge``), so a scheduler that
stops between the event and the submits leaves nothing undone.

**Several schedulers.** Each one decides on its own view; the command id derives from the
deployment and its number of scalings so far, and the aggregate refuses a decision on a
replica count that changed meanwhile and any within the cooldown (its time is in the log), so
two replicas of the scheduler make one change, never two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors

from cairn import lookup
from cairn.bus import AggregateCache, CommandContext, Connection, execute
from cairn.domain import endpoint as endpoints
from cairn.errors import CairnError, InvalidTransition, StaleAttempt
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.jobs import derived_id
from cairn.proto.metrics import MetricsLogged
from cairn.proto.streams import EVENTS

__all__ = ["BUCKETS", "BUCKET_S", "MIN_WINDOW_S", "Autoscaler", "Telemetry", "Windows"]

log = get_logger("cairn.scheduler")
_decoder = msgspec.json.Decoder(MetricsLogged)

#: the length of one telemetry window, and how many a deployment keeps (five minutes)
BUCKET_S = 5.0
BUCKETS = 60
#: a replica's agent reports every 5 s: a window of 10 s holds two reports of each replica
MIN_WINDOW_S = 10.0
#: within this share of the target the replica count stays
TOLERANCE = 0.1
#: how often the autoscaled deployments are looked for
SCAN_S = 5.0
ACTOR = "cairn-scheduler"


class Windows:
    """One deployment's request telemetry in fixed windows: per window, the requests its
    replicas answered and the seconds those spent in them."""

    def __init__(self) -> None:
        self.buckets: dict[int, tuple[int, float]] = {}

    def add(self, at: float, requests: int, busy_s: float) -> None:
        n = int(at // BUCKET_S)
        count, busy = self.buckets.get(n, (0, 0.0))
        self.buckets[n] = (count + requests, busy + busy_s)
        if len(self.buckets) > BUCKETS:
            for old in sorted(self.buckets)[: len(self.buckets) - BUCKETS]:
                del self.buckets[old]

    def complete(self, now: float, window_s: float) -> tuple[float, float, int, float]:
        """The whole windows that ended by ``now``, the last ones covering at least
        ``window_s``: their span (start, end) and the requests and seconds in them. The window
        holding ``now`` is left out (it is still filling), so the seconds summed and the span
        they are divided by are the same time."""
        end = math.floor(now / BUCKET_S)
        first = end - max(1, math.ceil(window_s / BUCKET_S - 1e-9))
        found = [self.buckets[n] for n in range(first, end) if n in self.buckets]
        requests, busy = sum(c for c, _ in found), sum(b for _, b in found)
        return first * BUCKET_S, end * BUCKET_S, requests, busy

    def rows(self) -> list[dict[str, float]]:
        return [
            {"start": n * BUCKET_S, "requests": c, "busy_s": round(b, 3)}
            for n, (c, b) in sorted(self.buckets.items())
        ]


class Telemetry:
    """The request metrics of the replicas followed, per deployment, in ``Windows``."""

    def __init__(self, conn: Connection, clock: Callable[[], float] = time.time) -> None:
        self.conn, self.clock = conn, clock
        self.windows: dict[tuple[str, str], Windows] = {}
        #: per deployment, since when its current replicas have all been followed (reset when
        #: the set changes: a scale-out or a scale-in)
        self.followed_since: dict[tuple[str, str], float] = {}
        #: per deployment, since when its current replicas have all been seen ready
        self.ready_since: dict[tuple[str, str], float] = {}
        self._subs: dict[tuple[str, str], tuple[tuple[str, str], Any]] = {}

    async def follow(self, ws: str, did: str, replicas: tuple[str, ...]) -> None:
        """Follow exactly these replicas' metrics for deployment ``did``."""
        key = (ws, did)
        wanted = {(ws, r) for r in replicas}
        gone = False
        for run_key, (owner, sub) in list(self._subs.items()):
            if owner == key and run_key not in wanted:
                del self._subs[run_key]
                gone = True
                await sub.unsubscribe()
        new = [r for r in wanted if r not in self._subs]
        for run_key in new:
            sub = await self.conn.nc.subscribe(subjects.metrics(*run_key), cb=self._taker(key))
            self._subs[run_key] = (key, sub)
        self.windows.setdefault(key, Windows())
        if new or gone or key not in self.followed_since:
            self.followed_since[key] = self.clock()
            self.ready_since.pop(key, None)

    def ready(self, key: tuple[str, str], all_ready: bool) -> float | None:
        """Since when every replica followed for ``key`` has been ready (None: one is not):
        the time it was first seen so, after the set last changed."""
        if not all_ready:
            self.ready_since.pop(key, None)
            return None
        return self.ready_since.setdefault(key, self.clock())

    def measured_from(self, key: tuple[str, str]) -> float | None:
        """Where a measuring window may start: once the current replicas are followed and
        all ready. Before that, a new replica's start-up would read as idle, and a removed
        one's busy seconds would still count against fewer replicas."""
        ready = self.ready_since.get(key)
        followed = self.followed_since.get(key)
        return None if ready is None or followed is None else max(ready, followed)

    def _taker(self, key: tuple[str, str]) -> Callable[[Any], Any]:
        async def take(msg: Any) -> None:
            try:
                batch = _decoder.decode(msg.data)
            except msgspec.DecodeError:
                log.warning("replica_metrics_undecodable", subject=msg.subject)
                return
            requests, busy_ms = 0, 0.0
            for point in batch.points:
                if not isinstance(point.value, (int, float)):
                    continue
                if point.name == "requests":
                    requests += int(point.value)
                elif point.name == "latency_ms_total":
                    busy_ms += float(point.value)
            if requests or busy_ms:
                self.windows.setdefault(key, Windows()).add(self.clock(), requests, busy_ms / 1000)

        return take

    async def forget(self, key: tuple[str, str]) -> None:
        await self.follow(*key, ())
        self.windows.pop(key, None)
        self.followed_since.pop(key, None)
        self.ready_since.pop(key, None)

    async def close(self) -> None:
        for _, sub in self._subs.values():
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is closing already
                log.debug("metrics_unsubscribe_failed")
        self._subs.clear()


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What one look at a deployment's load found."""

    replicas: int
    desired: int
    utilization_pct: float
    window_s: float
    requests: int


def desired_replicas(
    scale: Any,
    replicas: int,
    requests: int,
    busy_s: float,
    window_s: float,
    concurrency: int = 1,
) -> Decision:
    """The replica count for the load measured: ``busy_s`` seconds in the replicas over
    ``window_s``, each replica answering ``concurrency`` requests at once (its
    ``max_concurrent_requests``: a replica busy with that many all the time is at 100 %)."""
    utilization = 100.0 * busy_s / (window_s * replicas * concurrency)
    ratio = utilization / scale.target_utilization_pct
    desired = replicas if abs(ratio - 1) <= TOLERANCE else math.ceil(replicas * ratio - 1e-9)
    desired = max(scale.min_replicas, min(scale.max_replicas, desired))
    return Decision(
        replicas=replicas,
        desired=desired,
        utilization_pct=round(utilization, 1),
        window_s=window_s,
        requests=requests,
    )


def cooldown_of(scale: Any) -> float:
    window = max(scale.polling_interval_s, MIN_WINDOW_S)
    return (
        float(scale.cooldown_s)
        if scale.cooldown_s is not None
        else max(3 * scale.polling_interval_s, window)
    )


class Autoscaler:
    """Looks at each autoscaled deployment every polling interval (see the module)."""

    def __init__(
        self,
        conn: Connection,
        cache: AggregateCache,
        submit: Callable[..., Any],
        cancel: Callable[..., Any],
    ) -> None:
        self.conn, self.cache = conn, cache
        self.submit, self.cancel = submit, cancel
        self.telemetry = Telemetry(conn)
        self.scaled: set[tuple[str, str]] = set()
        self.due: dict[tuple[str, str], float] = {}
        self.next_scan = 0.0

    async def close(self) -> None:
        await self.telemetry.close()

    async def tick(self) -> None:
        """One pass: every ``SCAN_S`` look for autoscaled deployments, then look at each one
        that is due. A failure is logged and the next pass tries again (the job work of the
        reconcile pass it follows is done by then)."""
        now = time.time()
        if now >= self.next_scan:
            self.next_scan = now + SCAN_S
            try:
                await self._scan()
            except Exception as exc:  # the stream info may be unanswered for a while
                log.warning("autoscale_scan_failed", error=repr(exc))
        for key in sorted(self.scaled):
            if now >= self.due.get(key, 0.0):
                try:
                    await self._consider(key, now)
                except CairnError as exc:  # the next look tries again
                    log.warning("autoscale_failed", deployment=key[1], error=exc.message)
                except (nats.errors.Error, TimeoutError) as exc:
                    log.warning("autoscale_failed", deployment=key[1], error=repr(exc))

    async def _scan(self) -> None:
        """Find the deployments that autoscale (any workspace)."""
        base = subjects.events_of_kind(endpoints.DEPLOYMENT.kind)
        info = await self.conn.js.stream_info(EVENTS.name, subjects_filter=base)
        found: set[tuple[str, str]] = set()
        for subject in (info.state.subjects or {}) if info.state else {}:
            parts = subject.split(".")
            ws, did = parts[2], parts[-1]
            state = await lookup.state(self.cache, endpoints.DEPLOYMENT, ws, did)
            if state.live and state.spec is not None and state.spec.scale is not None:
                found.add((ws, did))
        for gone in self.scaled - found:
            await self.telemetry.forget(gone)
            self.due.pop(gone, None)
        self.scaled = found

    def load(self, ws: str, did: str) -> list[dict[str, float]]:
        """The deployment's request telemetry windows (none when it does not autoscale)."""
        windows = self.telemetry.windows.get((ws, did))
        return [] if windows is None else windows.rows()

    async def _consider(self, key: tuple[str, str], now: float) -> None:
        ws, did = key
        state = await lookup.state(self.cache, endpoints.DEPLOYMENT, ws, did, fresh=True)
        scale = None if state.spec is None else state.spec.scale
        if not state.live or scale is None:
            self.scaled.discard(key)
            await self.telemetry.forget(key)
            return
        self.due[key] = now + scale.polling_interval_s
        await self.telemetry.follow(ws, did, state.replicas)
        window = max(scale.polling_interval_s, MIN_WINDOW_S)
        cooldown = cooldown_of(scale)
        all_ready = state.serving and set(state.replicas) <= set(state.ready)
        self.telemetry.ready(key, all_ready)
        since = self.telemetry.measured_from(key)
        if not all_ready or since is None or now - state.scaled_at < cooldown:
            return
        start, end, requests, busy = self.telemetry.windows[key].complete(now, window)
        if start < since:  # not a whole window since the replicas were all ready
            return
        assert state.spec is not None
        found = desired_replicas(
            scale,
            len(state.replicas),
            requests,
            busy,
            end - start,
            state.spec.max_concurrent_requests,
        )
        if found.desired == found.replicas:
            return
        await self._scale(ws, did, state, found, now, cooldown)

    async def _scale(
        self,
        ws: str,
        did: str,
        state: endpoints.DeploymentState,
        found: Decision,
        now: float,
        cooldown: float,
    ) -> None:
        assert state.spec is not None and state.spec.scale is not None and state.job is not None
        added = [
            derived_id("scale", ws, did, state.scalings, i)
            for i in range(max(0, found.desired - found.replicas))
        ]
        command = endpoints.ScaleDeployment(
            at=now,
            cooldown_s=cooldown,
            replicas_before=found.replicas,
            replicas=found.desired,
            utilization_pct=found.utilization_pct,
            target_pct=state.spec.scale.target_utilization_pct,
            window_s=found.window_s,
            requests=found.requests,
            added=added,
        )
        command_id = derived_id("scale", ws, did, state.scalings)

        def ctx(cid: str) -> CommandContext:
            return CommandContext(
                workspace=ws, command_id=cid, actor=ACTOR, correlation_id=command_id
            )

        try:
            await execute(ctx(command_id), endpoints.DEPLOYMENT, did, command, cache=self.cache)
        except (StaleAttempt, InvalidTransition):  # it changed meanwhile: look again next time
            return
        after = await lookup.state(self.cache, endpoints.DEPLOYMENT, ws, did, fresh=True)
        log.info(
            "deployment_scaled",
            deployment=did,
            replicas=len(after.replicas),
            utilization_pct=found.utilization_pct,
        )
        spec = after.spec
        for run_id in after.replicas:
            if run_id in added and after.job is not None and spec is not None:
                await self.submit(ws, run_id, after.experiment_name, after.job, spec.compute, ctx)
        for run_id in state.replicas:
            if run_id not in after.replicas:
                await self.cancel(run_id, f"deployment {after.name} scaled in", ctx)
        await self.telemetry.follow(ws, did, after.replicas)
