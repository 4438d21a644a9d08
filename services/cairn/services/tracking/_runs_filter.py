"""The grammar of the runs query (``run.list``): a filter expression and an order, parsed and
compiled to SQL pieces over the tracking read model (``_runs_query`` runs them).

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cairn.domain.run import RunStatus
from cairn.errors import InvalidInput
from cairn.proto.commands import ListRuns
from cairn.proto.lexer import tokenize
from cairn.services.tracking._metrics import SUMMARIES

__all__ = ["Column", "Compiled", "column", "compile_query", "expr", "literal", "order_keys"]

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


@dataclass(frozen=True)
class Column:
    """A column a filter or order names: its SQL, how to compare it, what it was called."""

    text: str
    kind: str  # "metric" | "keyed" | "attribute"
    #: metric: (name, summary); keyed: (table, key); attribute: (column,)
    ref: tuple[str, ...]
    nullable: bool = True


@dataclass
class Compiled:
    """What compiling a filter and order produced: SQL pieces and their parameters."""

    metrics: list[str] = field(default_factory=list)  # joined metric names, by alias index
    where: str = ""
    where_args: list[Any] = field(default_factory=list)
    keys: list[tuple[Column, bool]] = field(default_factory=list)  # (column, descending)
    #: each tag or property comparison, ``{member<i>}`` in ``where``: (the runs matching as a
    #: list, as a probe per run, a count of the matches; the comparison's parameters)
    members: list[tuple[str, str, str, list[Any]]] = field(default_factory=list)


# -- parsing ---------------------------------------------------------------------------------


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
    def __init__(self, text: str, q: Compiled) -> None:
        self.tokens = tokenize(_TOKEN, text, "filter")
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
        left = self.peek()
        if left is not None:
            raise InvalidInput(f"filter: unexpected {left[1]!r}")
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
        values = self.values() if op == "IN" else [self.literal()]
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

    def literal(self) -> Any:
        kind, text = self.take()
        if kind == "str":
            return text[1:-1].replace(text[0] * 2, text[0])
        if kind == "num":
            number = float(text)
            if re.fullmatch(r"[-+]?\d+", text) and -(2**63) <= int(text) < 2**63:
                return int(text)
            return number  # SQLite's integers are 64-bit: a larger one compares as a float
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


def _metric_alias(q: Compiled, name: str) -> str:
    if name not in q.metrics:
        if len(q.metrics) >= _MAX_METRICS:
            raise InvalidInput(f"a query may name at most {_MAX_METRICS} metrics")
        q.metrics.append(name)
    return f"m{q.metrics.index(name)}"


def _presence(q: Compiled, col: Column, *, negate: bool, null: bool) -> tuple[str, list[Any]]:
    """``column IS [NOT] NULL``: the run lacks (has) the value."""
    if not null:
        raise InvalidInput(f"filter: IS after {col.text} takes NULL or NOT NULL")
    if col.kind == "keyed":
        table, key = col.ref
        has = (
            f"r.run_id IN (SELECT x.run_id FROM {{{table}}} x WHERE x.workspace = {{ws}}"
            f" AND x.key = {_key(key)})"
        )
        return (has if negate else f"NOT {has}"), []
    return f"{expr(q, col)} IS {'NOT ' if negate else ''}NULL", []


def _comparison(q: Compiled, col: Column, op: str, values: list[Any]) -> tuple[str, list[Any]]:
    rhs = "(" + ", ".join("?" * len(values)) + ")" if op == "IN" else "?"
    if col.kind == "keyed":
        table, key = col.ref
        match = f"x.key = {_key(key)} AND x.value {op} {rhs}"
        # the reader picks one of two equivalent forms by how many rows match (MEMBERS_LIST):
        # a few, through the (workspace, key, value) index once per query; many, probed per run
        # down the order's index, which stops at the page's end
        listed = (
            f"r.run_id IN (SELECT x.run_id FROM {{{table}}} x WHERE x.workspace = {{ws}}"
            f" AND {match})"
        )
        probed = (
            f"EXISTS (SELECT 1 FROM {{{table}}} x WHERE x.workspace = r.workspace"
            f" AND x.run_id = r.run_id AND {match})"
        )
        counted = (
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {{{table}}} x WHERE x.workspace = {{ws}}"
            f" AND {match} LIMIT {MEMBERS_LIST})"
        )
        q.members.append((listed, probed, counted, list(values)))
        return f"{{member{len(q.members) - 1}}}", list(values)
    return f"{expr(q, col)} {op} {rhs}", list(values)


#: matches of a tag or property comparison up to which the runs are listed once per query;
#: from there on each run down the order is probed instead (a page is found long before the
#: end of a common value's runs, where listing all of them cost 4–9 ms at 100,000 runs)
MEMBERS_LIST = 2000


def literal(text: str) -> str:
    """A key or metric name as an SQL string literal (``column`` refused control characters):
    the expressions that name them appear in several clauses, values go as parameters."""
    return "'" + text.replace("'", "''") + "'"


def _key(text: str) -> str:
    """A tag or property key as a literal inside a template that is later filled with the
    tables' names (``str.format``): its braces doubled, so a key such as ``{ws}`` stays text."""
    return literal(text).replace("{", "{{").replace("}", "}}")


def expr(q: Compiled, col: Column) -> str:
    """The SQL expression of a column (a metric's joined alias is made on first use)."""
    if col.kind == "metric":
        return f"{_metric_alias(q, col.ref[0])}.{col.ref[1]}"
    if col.kind == "keyed":
        table = col.ref[0]
        return (
            f"(SELECT x.value FROM {{{table}}} x WHERE x.workspace = r.workspace"
            f" AND x.run_id = r.run_id AND x.key = {_key(col.ref[1])})"
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


def compile_query(q: ListRuns) -> Compiled:
    query = Compiled()
    query.keys = order_keys(q.order_by)
    for col, _ in query.keys:  # the first key's metric is alias m0
        if col.kind == "metric":
            _metric_alias(query, col.ref[0])
    if q.filter.strip():
        query.where, query.where_args = _Parser(q.filter, query).parse()
    return query
