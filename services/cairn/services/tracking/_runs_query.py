"""The runs query (``run.list``): one page of runs, filtered and ordered as
``_runs_filter`` compiles them, read with keyset cursors (never ``OFFSET``).

When the first key is a metric, a page is read in two parts: the runs that have the metric,
walking the metric's index in order, then (only once those run out) the runs without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from cairn.errors import InvalidInput
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.commands import ListRuns
from cairn.services.tracking._metrics import SUMMARIES
from cairn.services.tracking._runs_filter import MEMBERS_LIST, compile_query, expr, literal

__all__ = ["RUN_COLUMNS", "RunsPage", "list_runs"]

RUN_COLUMNS = (
    *("workspace", "run_id", "experiment_id", "experiment_name", "display_name"),
    *("parent_run_id", "status", "error", "created_at", "created_by", "start_time"),
    *("end_time", "seq", "tags", "properties", "controller"),
)
_CURSOR_VERSION = 1


@dataclass(frozen=True)
class RunsPage:
    runs: list[dict[str, Any]]
    next_cursor: str | None
    remaining: int | None = None


# -- cursors ---------------------------------------------------------------------------------


def _fingerprint(q: ListRuns) -> str:
    shape = [q.experiment_name, q.parent_run_id, q.filter, list(q.order_by)]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def _encode_cursor(q: ListRuns, values: list[Any], run_id: str) -> str:
    raw = json.dumps([_CURSOR_VERSION, _fingerprint(q), values, run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(q: ListRuns, n_keys: int) -> tuple[list[Any], str] | None:
    if q.cursor is None:
        return None
    bad = InvalidInput("cursor: not a cursor that run.list made (pass next_cursor unchanged)")
    try:
        raw = base64.urlsafe_b64decode(q.cursor + "=" * (-len(q.cursor) % 4))
        version, fingerprint, values, run_id = json.loads(raw)
    except Exception as exc:
        raise bad from exc
    if version != _CURSOR_VERSION or not isinstance(values, list) or not isinstance(run_id, str):
        raise bad
    if fingerprint != _fingerprint(q):
        raise InvalidInput(
            "cursor: it belongs to another query (the filter, order, experiment or parent"
            " changed): start again without a cursor"
        )
    if len(values) != n_keys or not all(
        v is None
        or (isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63)
        or isinstance(v, float | str)
        for v in values
    ):
        raise bad
    return values, run_id


# -- evaluating ------------------------------------------------------------------------------


def _after(keys: list[tuple[str, bool, bool]], values: list[Any]) -> tuple[str, list[Any]]:
    """The keyset predicate: rows after (values, run_id) in the order of ``keys`` (each an
    SQL expression, descending, nullable), with nulls last; the run id is its last key."""
    ors: list[str] = []
    args: list[Any] = []
    eq_sql: list[str] = []
    eq_args: list[Any] = []
    for (sql, desc, nullable), value in zip(keys, values, strict=True):
        if value is not None:
            later = f"{sql} {'<' if desc else '>'} ?" + (f" OR {sql} IS NULL" if nullable else "")
            ors.append("(" + " AND ".join([*eq_sql, f"({later})"]) + ")")
            args.extend([*eq_args, value])
            eq_sql.append(f"{sql} = ?")
            eq_args.append(value)
        else:
            eq_sql.append(f"{sql} IS NULL")
    ors.append("(" + " AND ".join([*eq_sql, "r.run_id > ?"]) + ")")
    args.extend([*eq_args, None])  # the run id: filled in by the caller
    return "(" + " OR ".join(ors) + ")", args


def list_runs(
    db: sqlite3.Connection,
    t: Tables,
    metrics_table: str,
    workspace: str,
    q: ListRuns,
    *,
    count: bool = False,
) -> RunsPage:
    """One page of ``q`` from the read model: ``t`` the tracking tables, ``metrics_table``
    the physical name of the run metrics table."""
    return _Reader(db, t, metrics_table, workspace, q).page(count=count)


class _Reader:
    """The SQL of one page: the shared WHERE (scope, filter, cursor), then one or two
    ordered reads."""

    def __init__(
        self, db: sqlite3.Connection, t: Tables, metrics_table: str, workspace: str, q: ListRuns
    ) -> None:
        self.db, self.q, self.workspace = db, q, workspace
        self.metrics_table = metrics_table
        self.query = query = compile_query(q)
        self.cursor = _decode_cursor(q, len(query.keys))
        self.names = {"runs": t("runs"), "tags": t("tags"), "properties": t("properties")}
        self.names["ws"] = literal(workspace)  # an Id: a token of [A-Za-z0-9_-]
        for i, (listed, probed, counted, args) in enumerate(query.members):
            (matches,) = db.execute(self.fill(counted), args).fetchone()
            self.names[f"member{i}"] = self.fill(probed if matches >= MEMBERS_LIST else listed)
        self.keys = [(self.fill(expr(query, c)), desc, c.nullable) for c, desc in query.keys]
        self.joins = "".join(
            f" LEFT JOIN {metrics_table} m{i} ON m{i}.workspace = r.workspace"
            f" AND m{i}.run_id = r.run_id AND m{i}.name = {literal(name)}"
            for i, name in enumerate(query.metrics)
        )
        self.where, self.args = self._where()

    def fill(self, sql: str) -> str:
        return sql.format(**self.names)

    def _where(self) -> tuple[list[str], list[Any]]:
        q, query = self.q, self.query
        where, args = ["r.workspace = ?"], [self.workspace]
        if q.experiment_name is not None:
            where.append("r.experiment_id = ?")
            args.append(subjects.name_to_id(q.experiment_name))
        if q.parent_run_id is not None:
            where.append("r.parent_run_id = ?")
            args.append(q.parent_run_id)
        if query.where:
            where.append(self.fill(query.where))
            args.extend(query.where_args)
        if self.cursor is not None:
            pred, pred_args = _after(self.keys, self.cursor[0])
            where.append(pred)
            args.extend([*pred_args[:-1], self.cursor[1]])
            first, desc, nullable = self.keys[0]
            if not nullable and self.cursor[0][0] is not None:  # a range an index can seek
                where.append(f"{first} {'<=' if desc else '>='} ?")
                args.append(self.cursor[0][0])
        return where, args

    def select(
        self, where: list[str], args: list[Any], order: list[str], limit: int, tie: str = "r"
    ) -> list[Any]:
        columns = ", ".join(f"r.{c}" for c in RUN_COLUMNS)
        columns += "".join(
            f", m{i}.last, m{i}.min, m{i}.max" for i in range(len(self.query.metrics))
        )
        columns += "".join(f", {e}" for e, _, _ in self.keys)
        sql = (
            f"SELECT {columns} FROM {self.names['runs']} r{self.joins}"
            f" WHERE {' AND '.join(where)} ORDER BY {', '.join(order)}, {tie}.run_id LIMIT ?"
        )
        return list(self.db.execute(sql, [*args, limit]))

    @staticmethod
    def order(keys: list[tuple[str, bool, bool]]) -> list[str]:
        terms = []
        for sql, desc, nullable in keys:
            if nullable:
                terms.append(f"{sql} IS NULL")
            terms.append(f"{sql} {'DESC' if desc else 'ASC'}")
        return terms

    def by_metric(self, want: int) -> list[Any]:
        """The runs with the first key's metric, down its index; then those without it."""
        q, cursor = self.q, self.cursor
        first, desc, _ = self.keys[0]
        rows: list[Any] = []
        if cursor is None or cursor[0][0] is not None:
            # the metric's own columns too, so that its index can drive the scan
            bound, args = [f"{first} IS NOT NULL", "m0.workspace = ?"], [self.workspace]
            if q.experiment_name is not None:
                bound.append("m0.experiment_id = ?")
                args.append(subjects.name_to_id(q.experiment_name))
            if cursor is not None:
                bound.append(f"{first} {'<=' if desc else '>='} ?")
                args.append(cursor[0][0])
            order = [f"{first} {'DESC' if desc else 'ASC'}", *self.order(self.keys[1:])]
            rows = self.select([*self.where, *bound], [*self.args, *args], order, want, "m0")
        if len(rows) < want:
            order = self.order(self.keys[1:]) or ["1"]
            where = [*self.where, f"{first} IS NULL"]
            rows.extend(self.select(where, self.args, order, want - len(rows)))
        return rows

    def page(self, *, count: bool) -> RunsPage:
        q = self.q
        if self.query.keys[0][0].kind == "metric":
            rows = self.by_metric(q.limit + 1)
        else:
            rows = self.select(self.where, self.args, self.order(self.keys), q.limit + 1)
        remaining = None
        if count:
            sql = (
                f"SELECT COUNT(*) FROM {self.names['runs']} r{self.joins}"
                f" WHERE {' AND '.join(self.where)}"
            )
            (total,) = self.db.execute(sql, self.args).fetchone()
            remaining = max(0, int(total) - min(len(rows), q.limit))
        page = rows[: q.limit]
        next_cursor = None
        if len(rows) > q.limit:
            last = page[-1]
            values = list(last[len(last) - len(self.keys) :])
            next_cursor = _encode_cursor(q, values, last[1])
        runs = [_run(row, self.query.metrics) for row in page]
        self.add_metrics(runs)
        return RunsPage(runs, next_cursor, remaining)

    def add_metrics(self, runs: list[dict[str, Any]]) -> None:
        """The summaries of the metrics ``q.metrics`` asks for, on each run of the page (one
        primary-key read per run and name)."""
        wanted = [n for n in dict.fromkeys(self.q.metrics) if n not in self.query.metrics]
        if not wanted or not runs:
            return
        sql = (
            f"SELECT last, min, max FROM {self.metrics_table}"
            " WHERE workspace = ? AND run_id = ? AND name = ?"
        )
        for run in runs:
            found = run.setdefault("metrics", {})
            for name in wanted:
                row = self.db.execute(sql, (self.workspace, run["run_id"], name)).fetchone()
                found[name] = dict(zip(SUMMARIES, row or (None, None, None), strict=True))


def _run(row: tuple[Any, ...], metrics: list[str]) -> dict[str, Any]:
    n = len(RUN_COLUMNS)
    out = dict(zip(RUN_COLUMNS, row[:n], strict=True))
    out["tags"], out["properties"] = json.loads(out["tags"]), json.loads(out["properties"])
    if metrics:
        out["metrics"] = {
            name: dict(zip(SUMMARIES, row[n + 3 * i : n + 3 * i + 3], strict=True))
            for i, name in enumerate(metrics)
        }
    return out
