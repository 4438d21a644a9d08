"""The metrics ingester: validates batches, stores them on METRICS, answers metric queries."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec

from cairn.bus import Connection, EventStore
from cairn.domain import run
from cairn.errors import InvalidInput, NotFound, StaleAttempt
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.metrics import CompareMetric, GetMetrics, LogMetrics, MetricHistory, MetricsLogged
from cairn.proto.streams import METRICS
from cairn.rpc import Request, Responder
from cairn.service import ProjectedService
from cairn.services.ingester._projection import MetricsProjection, stored_value
from cairn.services.ingester._validate import validate_batch
from cairn.settings import Settings

__all__ = ["INLINE_POINTS", "MAX_PAGE", "IngesterService"]

#: get_metrics returns series up to this length inline; longer ones are read page by page
INLINE_POINTS = 1000
MAX_PAGE = 200_000
_encoder = msgspec.json.Encoder()


class IngesterService(ProjectedService):
    name = "ingester"

    def __init__(self, conn: Connection, settings: Settings) -> None:
        super().__init__(conn, settings, MetricsProjection())
        self.policy = settings.metrics_nonfinite
        self.metrics = EventStore(conn, stream=METRICS.name)
        commands = Responder(
            conn,
            subjects=[subjects.command_filter("metrics")],
            queue="ingester",
            types=(LogMetrics,),
            routes={LogMetrics.VERB: self._log},
        )
        queries = Responder(
            conn,
            subjects=[subjects.query_filter("metrics")],
            queue="ingester",
            types=(GetMetrics, MetricHistory, CompareMetric),
            routes={
                GetMetrics.NAME: self._get_metrics,
                MetricHistory.NAME: self._history,
                CompareMetric.NAME: self._compare,
            },
        )
        self.responders = [commands, queries]

    async def _experiment_of(self, ws: str, run_id: str, attempt: int | None) -> str:
        """The run's experiment. A batch from a job attempt is checked against the run's
        latest history (a newer attempt may have been assigned since the cached one); other
        batches only need the run to exist, and a cached history that has it is enough."""
        subject = subjects.event(ws, run.KIND, run_id)
        if attempt is None:
            history = await self.cache.read(subject, bool)
        else:
            history = await self.cache.refresh(subject)
        state = self.cache.state(subject, run.AGGREGATE, history)
        if not state.exists:
            raise NotFound(f"run {run_id} does not exist")
        if attempt is not None and attempt < state.attempt:
            raise StaleAttempt(
                f"attempt {attempt} of run {run_id} was replaced by attempt {state.attempt}:"
                " its metrics are refused"
            )
        if attempt is not None and attempt > state.attempt:
            raise InvalidInput(f"run {run_id} has no attempt {attempt}")
        return state.experiment_id

    async def _log(self, req: Request) -> Accepted:
        cmd: LogMetrics = req.body
        validate_batch(cmd, self.policy)
        stored = MetricsLogged(
            batch_id=cmd.command_id,
            workspace=req.workspace,
            run_id=cmd.run_id,
            experiment_id=await self._experiment_of(req.workspace, cmd.run_id, cmd.attempt),
            actor=req.actor,
            points=cmd.points,
            attempt=cmd.attempt,
        )
        result = await self.metrics.publish(
            subjects.metrics(req.workspace, cmd.run_id),
            _encoder.encode(stored),
            msg_id=cmd.command_id,
        )
        return Accepted(
            command_id=cmd.command_id,
            aggregate_id=cmd.run_id,
            seq=result.seq,
            replayed=result.duplicate,
        )

    # -- queries --------------------------------------------------------------------------

    async def _get_metrics(self, req: Request) -> QueryResult:
        q: GetMetrics = req.body
        return await self._read_metrics(
            req, lambda db, t: _azure_metrics(db, t, req.workspace, q), {}
        )

    async def _history(self, req: Request) -> QueryResult:
        q: MetricHistory = req.body
        budget = int(self.conn.max_payload * 0.7)  # a page stays well under the message limit
        return await self._read_metrics(
            req,
            lambda db, t: _history(db, t, req.workspace, q, budget),
            {"total": 0, "points": [], "next": None},
        )

    async def _read_metrics(
        self, req: Request, fn: Callable[[sqlite3.Connection, Tables], Any], empty: Any
    ) -> QueryResult:
        """``fn`` on the live read model, or, as of a moment, on one built from the run's
        batches the log held then. METRICS numbers its own messages, so a sequence (of
        EVENTS, as everywhere) stands for the time its event was stored."""
        q = req.body
        if q.as_of_seq is None and q.as_of_time is None:
            return await self.read(req, fn)
        until = q.as_of_time
        if q.as_of_seq is not None:
            stored = await self.store.stored_at(q.as_of_seq)
            if stored is None:
                raise NotFound(f"the log holds no event at sequence {q.as_of_seq}")
            until = stored if until is None else min(until, stored)
        subject = subjects.metrics(req.workspace, q.run_id)
        then = await self.read_as_of(subject, fn, up_to_seq=None, up_to_time=until)
        if then is None:  # no batch yet
            return QueryResult(seq=0, data=empty)
        return then

    async def _compare(self, req: Request) -> QueryResult:
        q: CompareMetric = req.body

        def fn(db: sqlite3.Connection, t: Tables) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT run_id, count, last_json, min, max, last_step FROM {t('series')}"
                " WHERE workspace = ? AND experiment_id = ? AND name = ? ORDER BY run_id",
                (req.workspace, q.experiment_id, q.name),
            )
            keys = ("run_id", "count", "last", "min", "max", "last_step")
            return [
                dict(zip(keys, (r[0], r[1], json.loads(r[2]), *r[3:]), strict=True)) for r in rows
            ]

        return await self.read(req, fn)


def _azure_metrics(
    db: sqlite3.Connection, t: Tables, ws: str, q: GetMetrics
) -> dict[str, dict[str, Any]]:
    """{name: {"kind", "count", "value"}}: ``value`` shaped as Azure ML returns it, or absent
    (with ``count``) for series longer than INLINE_POINTS, which the client pages through."""
    sql = f"SELECT series_id, name, kind, count FROM {t('series')} WHERE workspace=? AND run_id=?"
    args: list[Any] = [ws, q.run_id]
    if q.name is not None:
        sql += " AND name = ?"
        args.append(q.name)
    out: dict[str, dict[str, Any]] = {}
    for series, name, kind, count in db.execute(sql, args).fetchall():
        entry: dict[str, Any] = {"kind": kind, "count": count}
        if count <= INLINE_POINTS or kind != "scalar":
            values = [
                stored_value(v, j)
                for v, j in db.execute(
                    f"SELECT value, json FROM {t('points')} WHERE series_id = ?"
                    " ORDER BY step, seq, idx",
                    (series,),
                )
            ]
            entry["value"] = _shape(kind, values)
        out[name] = entry
    return out


def _shape(kind: str, values: list[Any]) -> Any:
    if kind == "scalar":
        return values[0] if len(values) == 1 else values
    if kind == "row":
        table: dict[str, list[Any]] = {}
        for row in values:
            for column, v in row.items():
                table.setdefault(column, []).append(v)
        return table
    return values[-1]  # list, table, image: the latest


def _series_id(
    db: sqlite3.Connection, t: Tables, ws: str, run_id: str, name: str
) -> tuple[int, int]:
    row = db.execute(
        f"SELECT series_id, count FROM {t('series')} WHERE workspace=? AND run_id=? AND name=?"
        " AND kind = 'scalar'",
        (ws, run_id, name),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _history(
    db: sqlite3.Connection, t: Tables, ws: str, q: MetricHistory, budget: int
) -> dict[str, Any]:
    series, total = _series_id(db, t, ws, q.run_id, q.name)
    if q.max_points > 0 and total > q.max_points:
        buckets = _downsample(db, t, series, total, q.max_points)
        return {"total": total, "points": buckets, "next": None}
    limit = max(1, min(q.limit, MAX_PAGE, budget // 40))
    after = "" if q.after is None else " AND (step, seq, idx) > (?, ?, ?)"
    args = (series,) if q.after is None else (series, *q.after)
    rows = db.execute(
        f"SELECT step, time, value, json, seq, idx FROM {t('points')} WHERE series_id = ?"
        f"{after} ORDER BY step, seq, idx LIMIT ?",
        (*args, limit),
    ).fetchall()
    points: list[Any] = []
    for step, tm, number, text, _, _ in rows:  # a tight loop: no call for plain numbers
        points.append((step, tm, number) if text is None else (step, tm, json.loads(text)))
        budget -= 40 if text is None else 40 + len(text)
        if budget <= 0:
            break
    more = len(points) < len(rows) or len(rows) == limit
    cursor = None
    if more and points:
        last = rows[len(points) - 1]
        cursor = [last[0], last[4], last[5]]  # (step, seq, idx) of the last point sent
    return {"total": total, "points": points, "next": cursor}


def _downsample(
    db: sqlite3.Connection, t: Tables, series: int, total: int, buckets: int
) -> list[list[Any]]:
    """``buckets`` points: for each consecutive bucket its last point plus its min and max,
    as ``[step, time, value, min, max]``."""
    out: list[list[Any]] = []
    size = total / buckets
    bucket: list[tuple[Any, ...]] = []
    edge, index = size, 0
    rows = db.execute(
        f"SELECT step, time, value, json FROM {t('points')} WHERE series_id = ?"
        " ORDER BY step, seq, idx",
        (series,),
    )
    for row in rows:
        bucket.append(row)
        index += 1
        if index >= edge or index == total:
            numbers = [r[2] for r in bucket if r[2] is not None]
            last = bucket[-1]
            low, high = min(numbers, default=None), max(numbers, default=None)
            out.append([last[0], last[1], stored_value(last[2], last[3]), low, high])
            bucket, edge = [], edge + size
    return out
