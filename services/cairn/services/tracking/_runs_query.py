"""The runs query (``run.list``): a filter expression and an order, compiled to SQL over the
tracking read model, answered a page at a time with keyset cursors.

Columns (a filter's left side, an order's key):

=============================  ===============================================================
``metrics.<name>``             the metric's last value (highest step); ``.last``, ``.min`` and
``metrics.<name>.min|max``     ``.max`` name a summary; a name with dots or spaces in backticks:
                               ``metrics.`val.loss`.min``. Finite numbers only.
``tags.<key>``                 the run's tag
``properties.<key>``           the run's property; ``params.<key>`` is the same column (Cairn
``params.<key>``               runs have no parameters apart from properties, as in Azure ML v1)
``attributes.<name>`` or       ``run_id``, ``name`` (the display name), ``status``,
``<name>``                     ``experiment_name``, ``parent_run_id``, ``created_at``,
                               ``created_by``, ``start_time``, ``end_time``
=============================  ===============================================================

A filter is comparisons joined with ``AND`` and ``OR`` (``AND`` binds tighter; parentheses
group): ``column op value`` with op one of ``= != < <= > >= LIKE``, ``column IN (v, ...)``,
or ``column IS NULL`` / ``column IS NOT NULL`` (the run lacks / has the value).
Metrics compare with numbers, every other column with quoted strings (times are ISO-8601 text in
UTC, e.g. ``created_at > '2026-01-01'``). A run without the tag, property or metric matches no
comparison on it. An order key is a column with ``ASC`` (the default) or ``DESC``; runs without
the value sort last either way, and the run id breaks ties, so a cursor resumes exactly.

When the first key is a metric, a page is read in two parts: the runs that have the metric,
walking the metric's index in order, then (only once those run out) the runs without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from cairn.domain.run import RunStatus
from cairn.errors import InvalidInput
from cairn.projection import Tables
from cairn.proto import subjects
from cairn.proto.commands import ListRuns
from cairn.services.tracking._metrics import SUMMARIES

__all__ = ["RUN_COLUMNS", "RunsPage", "list_runs"]

RUN_COLUMNS = (
    *("workspace", "run_id", "experiment_id", "experiment_name", "display_name"),
    *("parent_run_id", "status", "error", "created_at", "created_by", "start_time"),
    *("end_time", "seq", "tags", "properties"),
)
#: attribute -> (column of ``runs``, may be null)
_ATTRIBUTES = {
    "run_id": ("run_id", False),
    "name": ("display_name", True),
    "display_name": ("display_name", True),
    "status": ("status", False),
    "experiment_name": ("experiment_name", False),
    "parent_run_id": ("parent_run_id", True),
    "created_at": ("created_at", False),
    "created_by": ("created_by", True),
    "start_time": ("start_time", True),
    "end_time": ("end_time", True),
}
_KEYED = {"tags": "tags", "properties": "properties", "params": "properties"}
_OPS = ("=", "!=", "<", "<=", ">", ">=", "LIKE", "IN")
_MAX_METRICS = 8
_MAX_TERMS = 64
_MAX_DEPTH = 16
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")"
    r"|(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))"
    r"|(?P<op><=|>=|!=|<>|=|<|>)"
    r"|(?P<punct>[(),])"
    r"|(?P<word>(?:`[^`]+`|[A-Za-z_][\w\-/:]*)(?:\.(?:`[^`]+`|[\w\-/:]+))*))"
)
_CURSOR_VERSION = 1


@dataclass(frozen=True)
class Column:
    """A column a filter or order names: its SQL, how to compare it, what it was called."""

    text: str
    kind: str  # "metric" | "keyed" | "attribute"
    #: metric: (name, summary); keyed: (table, key); attribute: (column,)
    ref: tuple[str, ...]
    nullable: bool = True


@dataclass
class _Query:
    """What compiling a filter and order produced: SQL pieces and their parameters."""

    metrics: list[str] = field(default_factory=list)  # joined metric names, by alias index
    where: str = ""
    where_args: list[Any] = field(default_factory=list)
    keys: list[tuple[Column, bool]] = field(default_factory=list)  # (column, descending)


@dataclass(frozen=True)
class RunsPage:
    runs: list[dict[str, Any]]
    next_cursor: str | None
    remaining: int | None = None


# -- parsing ---------------------------------------------------------------------------------


def _tokens(text: str, what: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidInput(f"{what}: cannot read {text[pos:].strip()[:40]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _parts(word: str) -> list[str]:
    return [p[1:-1] if p.startswith("`") else p for p in re.findall(r"`[^`]+`|[^.`]+", word)]


def column(word: str, what: str) -> Column:
    """The column ``word`` names, or ``InvalidInput`` naming what is wrong with it."""
    parts = _parts(word)
    if any(ord(c) < 32 or ord(c) == 127 for c in word):
        raise InvalidInput(f"{what}: a column name holds a control character")
    head = parts[0].lower() if parts else ""
    if head == "metrics":
        if len(parts) == 2 or (len(parts) == 3 and parts[2] in SUMMARIES):
            summary = parts[2] if len(parts) == 3 else "last"
            return Column(word, "metric", (parts[1], summary))
        raise InvalidInput(
            f"{what}: {word!r} is not metrics.<name> or metrics.<name>.(last|min|max)"
            " (a name with dots in backticks: metrics.`a.b`)"
        )
    if head in _KEYED:
        if len(parts) != 2:
            raise InvalidInput(f"{what}: {word!r} is not {head}.<key> (a key with dots in `…`)")
        return Column(word, "keyed", (_KEYED[head], parts[1]))
    name = parts[1] if head == "attributes" and len(parts) == 2 else word
    if (head == "attributes" and len(parts) != 2) or name not in _ATTRIBUTES:
        known = ", ".join(_ATTRIBUTES)
        raise InvalidInput(
            f"{what}: unknown column {word!r}: use metrics.<name>, tags.<key>, params.<key>,"
            f" properties.<key> or an attribute ({known})"
        )
    col, nullable = _ATTRIBUTES[name]
    return Column(word, "attribute", (col,), nullable)


class _Parser:
    def __init__(self, text: str, q: _Query) -> None:
        self.tokens = _tokens(text, "filter")
        self.pos = 0
        self.q = q
        self.terms = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise InvalidInput("filter: ends too early")
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].upper() == word:
            self.pos += 1
            return True
        return False

    def parse(self) -> tuple[str, list[Any]]:
        sql, args = self.any_of(0)
        if self.peek() is not None:
            raise InvalidInput(f"filter: unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return sql, args

    def any_of(self, depth: int) -> tuple[str, list[Any]]:
        parts = [self.all_of(depth)]
        while self.keyword("OR"):
            parts.append(self.all_of(depth))
        return _join(parts, " OR ")

    def all_of(self, depth: int) -> tuple[str, list[Any]]:
        parts = [self.term(depth)]
        while self.keyword("AND"):
            parts.append(self.term(depth))
        return _join(parts, " AND ")

    def term(self, depth: int) -> tuple[str, list[Any]]:
        if self.peek() == ("punct", "("):
            if depth >= _MAX_DEPTH:
                raise InvalidInput(f"filter: more than {_MAX_DEPTH} nested parentheses")
            self.take()
            inner = self.any_of(depth + 1)
            if self.take() != ("punct", ")"):
                raise InvalidInput("filter: a '(' is not closed")
            return inner
        self.terms += 1
        if self.terms > _MAX_TERMS:
            raise InvalidInput(f"filter: more than {_MAX_TERMS} comparisons")
        kind, word = self.take()
        if kind != "word":
            raise InvalidInput(f"filter: expected a column, got {word!r}")
        col = column(word, "filter")
        if self.keyword("IS"):
            return _presence(self.q, col, negate=self.keyword("NOT"), null=self.keyword("NULL"))
        op_kind, op = self.take()
        op = "!=" if op == "<>" else op.upper()
        if op not in _OPS or op_kind not in ("op", "word"):
            raise InvalidInput(f"filter: {op!r} after {word} is not one of {' '.join(_OPS)}")
        values = self.values() if op == "IN" else [self.value(col, op)]
        for v in values:
            _check_value(col, op, v)
        return _comparison(self.q, col, op, values)

    def values(self) -> list[Any]:
        if self.take() != ("punct", "("):
            raise InvalidInput("filter: IN takes a list in parentheses: IN ('a', 'b')")
        out = [self.literal()]
        while (token := self.take()) == ("punct", ","):
            out.append(self.literal())
        if token != ("punct", ")"):
            raise InvalidInput(f"filter: expected ',' or ')' in an IN list, got {token[1]!r}")
        return out

    def value(self, col: Column, op: str) -> Any:
        return self.literal()

    def literal(self) -> Any:
        kind, text = self.take()
        if kind == "str":
            return text[1:-1].replace(text[0] * 2, text[0])
        if kind == "num":
            number = float(text)
            return int(text) if re.fullmatch(r"[-+]?\d+", text) else number
        raise InvalidInput(f"filter: expected a value (a number or a quoted string), got {text!r}")


def _join(parts: list[tuple[str, list[Any]]], glue: str) -> tuple[str, list[Any]]:
    if len(parts) == 1:
        return parts[0]
    return "(" + glue.join(p[0] for p in parts) + ")", [a for p in parts for a in p[1]]


def _check_value(col: Column, op: str, value: Any) -> None:
    if col.kind == "metric":
        if op == "LIKE" or not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidInput(f"filter: {col.text} compares with numbers (= != < <= > >= IN)")
        if abs(value) > 1e308:
            raise InvalidInput(f"filter: {value!r} is not a finite number")
        return
    if not isinstance(value, str):
        raise InvalidInput(f"filter: {col.text} compares with quoted strings, not {value!r}")
    if col.ref == ("status",) and op in ("=", "!=", "IN") and value not in _STATUSES:
        raise InvalidInput(f"filter: status {value!r} is not one of {', '.join(_STATUSES)}")


_STATUSES = tuple(s.value for s in RunStatus)


def _metric_alias(q: _Query, name: str) -> str:
    if name not in q.metrics:
        if len(q.metrics) >= _MAX_METRICS:
            raise InvalidInput(f"a query may name at most {_MAX_METRICS} metrics")
        q.metrics.append(name)
    return f"m{q.metrics.index(name)}"


def _presence(q: _Query, col: Column, *, negate: bool, null: bool) -> tuple[str, list[Any]]:
    """``column IS [NOT] NULL``: the run lacks (has) the value."""
    if not null:
        raise InvalidInput(f"filter: IS after {col.text} takes NULL or NOT NULL")
    if col.kind == "keyed":
        table, key = col.ref
        has = (
            f"r.run_id IN (SELECT x.run_id FROM {{{table}}} x WHERE x.workspace = {{ws}}"
            f" AND x.key = {_literal(key)})"
        )
        return (has if negate else f"NOT {has}"), []
    return f"{_expr(q, col)} IS {'NOT ' if negate else ''}NULL", []


def _comparison(q: _Query, col: Column, op: str, values: list[Any]) -> tuple[str, list[Any]]:
    rhs = "(" + ", ".join("?" * len(values)) + ")" if op == "IN" else "?"
    if col.kind == "keyed":
        table, key = col.ref
        # through the (workspace, key, value) index, once per query (not per run): the runs
        # whose key compares so
        sql = (
            f"r.run_id IN (SELECT x.run_id FROM {{{table}}} x WHERE x.workspace = {{ws}}"
            f" AND x.key = {_literal(key)} AND x.value {op} {rhs})"
        )
        return sql, list(values)
    return f"{_expr(q, col)} {op} {rhs}", list(values)


def _literal(text: str) -> str:
    """A key or metric name as an SQL string literal (``column`` refused control characters):
    the expressions that name them appear in several clauses, values go as parameters."""
    return "'" + text.replace("'", "''") + "'"


def _expr(q: _Query, col: Column) -> str:
    """The SQL expression of a column (a metric's joined alias is made on first use)."""
    if col.kind == "metric":
        return f"{_metric_alias(q, col.ref[0])}.{col.ref[1]}"
    if col.kind == "keyed":
        table = col.ref[0]
        return (
            f"(SELECT x.value FROM {{{table}}} x WHERE x.workspace = r.workspace"
            f" AND x.run_id = r.run_id AND x.key = {_literal(col.ref[1])})"
        )
    return f"r.{col.ref[0]}"


def order_keys(order_by: tuple[str, ...]) -> list[tuple[Column, bool]]:
    keys: list[tuple[Column, bool]] = []
    for text in order_by or ("created_at DESC",):
        words = text.split()
        direction = words[-1].upper() if len(words) > 1 else "ASC"
        if len(words) > 2 or direction not in ("ASC", "DESC") or not words:
            raise InvalidInput(f"order_by: {text!r} is not '<column> [ASC|DESC]'")
        if len(words) == 1 and words[0].upper() in ("ASC", "DESC"):
            raise InvalidInput(f"order_by: {text!r} names no column")
        keys.append((column(words[0], "order_by"), direction == "DESC"))
    return keys


def compile_query(q: ListRuns) -> _Query:
    query = _Query()
    query.keys = order_keys(q.order_by)
    for col, _ in query.keys:  # the first key's metric is alias m0
        if col.kind == "metric":
            _metric_alias(query, col.ref[0])
    if q.filter.strip():
        query.where, query.where_args = _Parser(q.filter, query).parse()
    return query


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
        v is None or (isinstance(v, int | float | str) and not isinstance(v, bool)) for v in values
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
    for (expr, desc, nullable), value in zip(keys, values, strict=True):
        if value is not None:
            later = f"{expr} {'<' if desc else '>'} ?" + (f" OR {expr} IS NULL" if nullable else "")
            ors.append("(" + " AND ".join([*eq_sql, f"({later})"]) + ")")
            args.extend([*eq_args, value])
            eq_sql.append(f"{expr} = ?")
            eq_args.append(value)
        else:
            eq_sql.append(f"{expr} IS NULL")
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
        self.query = query = compile_query(q)
        self.cursor = _decode_cursor(q, len(query.keys))
        self.names = {"runs": t("runs"), "tags": t("tags"), "properties": t("properties")}
        self.names["ws"] = _literal(workspace)  # an Id: a token of [A-Za-z0-9_-]
        self.keys = [(self.fill(_expr(query, c)), desc, c.nullable) for c, desc in query.keys]
        self.joins = "".join(
            f" LEFT JOIN {metrics_table} m{i} ON m{i}.workspace = r.workspace"
            f" AND m{i}.run_id = r.run_id AND m{i}.name = {_literal(name)}"
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
        for expr, desc, nullable in keys:
            if nullable:
                terms.append(f"{expr} IS NULL")
            terms.append(f"{expr} {'DESC' if desc else 'ASC'}")
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
        return RunsPage([_run(row, self.query.metrics) for row in page], next_cursor, remaining)


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
