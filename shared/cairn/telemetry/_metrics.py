"""The process's metrics (prometheus-client's default registry) and its readiness."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "AGENT_BUSY_SLOTS",
    "AGENT_SLOTS",
    "MIRROR_DROPPED",
    "PROJECTION_APPLIED",
    "PROJECTION_LAG",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SCHEDULER_QUEUED",
    "SCHEDULER_RUNNING",
    "WEBHOOK_ATTEMPTS",
    "Readiness",
    "RequestMetrics",
    "forget",
    "read_through",
    "readiness",
    "render",
]

#: 0.5 ms .. 10 s: a cached query answers in well under a millisecond, a command that appends
#: in a few, a query that waits for its read model up to its ``wait_s``
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter(
    "cairn_rpc_requests",
    "Commands and queries answered, by outcome (ok, or the error code of the reply)",
    ["service", "verb", "kind", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "cairn_rpc_request_duration_seconds",
    "Time from a request's arrival to its reply being ready (decode, gate, handler)",
    ["service", "verb"],
    buckets=LATENCY_BUCKETS,
)
PROJECTION_APPLIED = Gauge(
    "cairn_projection_applied_sequence",
    "The last stream sequence a read model has applied (or passed over)",
    ["projection"],
)
PROJECTION_LAG = Gauge(
    "cairn_projection_lag_messages",
    "Stream last sequence minus the sequence a read model has applied",
    ["projection"],
)
WEBHOOK_ATTEMPTS = Counter(
    "cairn_webhook_attempts",
    "Webhook delivery attempts, by outcome: delivered (2xx), failed (retried), dead_lettered",
    ["outcome"],
)
MIRROR_DROPPED = Counter(
    "cairn_gateway_mirror_dropped",
    "Copies of scoring requests to a mirrored deployment dropped because"
    " gateway_mirror_max_inflight copies were on their way",
)
SCHEDULER_QUEUED = Gauge(
    "cairn_scheduler_queued_jobs",
    "Jobs waiting for an agent, by compute target (the scheduler's read model)",
    ["compute"],
)
SCHEDULER_RUNNING = Gauge(
    "cairn_scheduler_running_jobs",
    "Jobs held by an agent (preparing, running, being canceled), by compute target",
    ["compute"],
)
AGENT_SLOTS = Gauge("cairn_agent_slots", "Job slots of an agent", ["agent", "compute"])
AGENT_BUSY_SLOTS = Gauge(
    "cairn_agent_busy_slots", "Job slots of an agent taken by a job", ["agent", "compute"]
)


def render() -> tuple[bytes, str]:
    """The metrics of this process in the Prometheus text format: (body, content type).
    Gauges read through functions are read here, so call it on the event loop's thread."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


#: who reads each function-backed series, latest last: twins in one process (tests run a
#: second set of services beside the first) hand the series back to each other as they stop
_READERS: dict[tuple[int, tuple[str, ...]], list[tuple[object, Any]]] = {}


def read_through(metric: Any, labels: tuple[str, ...], owner: object, fn: Any) -> None:
    r"""The series ``labels`` of gauge ``metric`` reads ``fn()`` at each scrape, on behalf of
    ``owner`` until it is forgotten (:func:`forget`)."""
    _READERS.setdefault((id(metric), labels), []).append((owner, fn))
    metric.labels(*labels).set_function(fn)


def forget(metric: Any, *labels: str, owner: object = None) -> None:
    """Drop one labelled series (a stopped projection, agent): no stale value stays behind.
    With ``owner`` (a :func:`read_through` reader), drop its reading: the series goes back to
    a twin still running, else away."""
    key = (id(metric), labels)
    if owner is not None:
        readers = [r for r in _READERS.get(key, []) if r[0] is not owner]
        if readers:
            _READERS[key] = readers
            metric.labels(*labels).set_function(readers[-1][1])
            return
        _READERS.pop(key, None)
    try:
        metric.remove(*labels)
    except KeyError:  # never set, or already dropped
        return


class RequestMetrics:
    """The request counter and latency histogram of one responder, with the labelled
    children cached: observing a request costs two dictionary lookups, an ``inc`` and an
    ``observe``."""

    def __init__(self, service: str, verbs: set[str] | frozenset[str]) -> None:
        self.service = service
        self.verbs = frozenset(verbs)
        self._counters: dict[tuple[str, bool, str], Any] = {}
        self._histograms: dict[str, Any] = {}

    def observe(self, verb: str, query: bool, outcome: str, started: float) -> None:
        """One request answered; ``started`` is its ``time.perf_counter()`` on arrival.
        A verb this responder does not serve is counted as ``other`` (no label per typo)."""
        elapsed = time.perf_counter() - started
        if verb not in self.verbs:
            verb = "other"
        key = (verb, query, outcome)
        counter = self._counters.get(key)
        if counter is None:
            kind = "query" if query else "command"
            counter = self._counters[key] = REQUESTS.labels(self.service, verb, kind, outcome)
        counter.inc()
        histogram = self._histograms.get(verb)
        if histogram is None:
            histogram = self._histograms[verb] = REQUEST_SECONDS.labels(self.service, verb)
        histogram.observe(elapsed)


class Readiness:
    """Whether this process is ready to serve: every part it runs has said so, and every
    check (a projection caught up with its stream) passes. Nothing registered: not ready.

    ``run_services`` expects each service when it starts, marks it ready once started and its
    projections caught up, and not ready as soon as the stop is asked; a gateway marks itself.
    """

    def __init__(self) -> None:
        #: each part's name and readiness, by key (the part itself, or its name): twins of
        #: one name in one process (a test's second set of services) count apart
        self._parts: dict[object, tuple[str, bool]] = {}
        self._checks: dict[object, tuple[str, Callable[[], bool]]] = {}

    def expect(self, name: str, key: object = None) -> None:
        """``name`` is part of this process and not ready yet."""
        self._parts[name if key is None else key] = (name, False)

    def mark_ready(self, name: str, key: object = None) -> None:
        self._parts[name if key is None else key] = (name, True)

    def mark_not_ready(self, name: str, key: object = None) -> None:
        """``name`` is stopping (or cannot serve for now)."""
        key = name if key is None else key
        if key in self._parts:
            self._parts[key] = (name, False)

    def withdraw(self, name: str, key: object = None) -> None:
        """``name`` has stopped: no longer part of this process."""
        self._parts.pop(name if key is None else key, None)

    def add_check(self, key: object, name: str, check: Callable[[], bool]) -> None:
        """While registered, the process is ready only if ``check()`` is true."""
        self._checks[key] = (name, check)

    def remove_check(self, key: object) -> None:
        self._checks.pop(key, None)

    def state(self) -> dict[str, bool]:
        """Each part's and check's readiness, by name."""
        state: dict[str, bool] = {}
        for name, ready in self._parts.values():
            state[name] = state.get(name, True) and ready
        for name, check in self._checks.values():
            state[name] = state.get(name, True) and check()
        return state

    @property
    def ready(self) -> bool:
        state = self.state()
        return bool(self._parts) and all(state.values())


#: this process's readiness (``/readyz``)
readiness = Readiness()
