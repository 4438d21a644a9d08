"""Metric points: what ``run.log*`` produce, how they travel, and how they are stored.

A point is ``[name, kind, value, step, time]`` (an array, to keep 100k-point histories small):

=======  ==========================================  ==================================
kind     value                                       from
=======  ==========================================  ==================================
scalar   number, bool or string                      ``run.log``
list     list of scalars                             ``run.log_list``
row      {column: scalar}                            ``run.log_row``
table    {column: [scalars]}                         ``run.log_table``
image    the run file path of the image              ``run.log_image``
=======  ==========================================  ==================================

JSON has no NaN or infinity: such values travel as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``, and the ingester's policy decides whether they are kept or refused.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from cairn.proto._base import Count, Id, Int64, MetricName
from cairn.proto.commands import AsOfQuery, Command, Query

__all__ = [
    "NONFINITE",
    "CompareMetric",
    "GetMetrics",
    "LogMetrics",
    "MetricHistory",
    "MetricKind",
    "MetricPoint",
    "MetricsLogged",
    "Value",
]

MetricKind = Literal["scalar", "list", "row", "table", "image"]
Scalar = float | Int64 | bool | Annotated[str, msgspec.Meta(max_length=4096)]
Value = Scalar | list[Scalar] | dict[str, Scalar | list[Scalar]]
NONFINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class MetricPoint(msgspec.Struct, frozen=True, array_like=True):
    name: MetricName
    kind: MetricKind
    value: Value
    step: Count
    time: float


class LogMetrics(Command, frozen=True, kw_only=True, tag=True):
    """One batch of points for one run; ``command_id`` is the batch id (dedupe key).

    ``attempt``: set by a job's script (the SDK reads ``CAIRN_ATTEMPT``); a batch from an
    attempt that a newer one has replaced is refused as stale. None: a run logged directly."""

    VERB = "metrics.log"
    run_id: Id
    points: list[MetricPoint]
    attempt: Count | None = None


class MetricsLogged(msgspec.Struct, frozen=True, kw_only=True):
    """What the ingester stores on ``cairn.metrics.<ws>.<run>`` after validating a batch."""

    batch_id: Id
    workspace: Id
    run_id: Id
    experiment_id: Id
    actor: str
    points: list[MetricPoint]
    #: the job attempt that logged the batch (None: not from a job)
    attempt: int | None = None


class GetMetrics(AsOfQuery, frozen=True, kw_only=True, tag=True):
    """Azure-shaped: repeated scalars as lists, rows and tables as {column: [values]}. As of
    a moment: the batches stored when the EVENTS message at ``as_of_seq`` was (a sequence of
    EVENTS, as every other ``as_of_seq``: METRICS numbers its own), and/or at ``as_of_time``."""

    NAME = "metrics.get"
    run_id: Id
    name: MetricName | None = None


class MetricHistory(AsOfQuery, frozen=True, kw_only=True, tag=True):
    """Points ``[step, time, value]`` of one scalar metric by step, a page at a time: pass the
    reply's ``next`` cursor as ``after`` until it is null. With ``max_points`` > 0 a longer
    series is downsampled to that many buckets, each ``[step, time, value, min, max]``. As
    of a moment as in ``GetMetrics``."""

    NAME = "metrics.history"
    run_id: Id
    name: MetricName
    max_points: Count = 0
    after: tuple[Int64, Int64, Int64] | None = None
    limit: Count = 200_000


class CompareMetric(Query, frozen=True, kw_only=True, tag=True):
    """One metric across every run of an experiment: last, min, max, count per run."""

    NAME = "metrics.compare"
    experiment_id: Id
    name: MetricName
