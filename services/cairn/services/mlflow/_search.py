"""MLflow's run search (``filter_string``, ``order_by``) rewritten into Cairn's runs query
(``run.list``: docs/design.md, "The runs query").

The grammars are close: MLflow's is a subset of Cairn's (``AND`` only, no ``OR``). What
differs is rewritten token by token:

- identifiers: ``metrics.x``, ``params.x``, ``tags.x`` (the key may hold dots, as in
  ``tags.mlflow.runName``, or be quoted with backticks or double quotes) become Cairn's
  ``metrics.`x```, ``params.`x```, ``tags.`x```; MLflow's singular prefixes (``metric.``,
  ``param.``, ``tag.``, ``attribute.``, ``attr.``) are accepted as MLflow accepts them;
- attributes: ``run_id``, ``run_name`` (Cairn's ``name``), ``status``, ``start_time``,
  ``end_time``, ``created`` (``created_at``), ``user_id`` (``created_by``);
- values: MLflow's statuses (``RUNNING``, ``FINISHED``...) become Cairn's, and times in
  milliseconds since the epoch become ISO-8601 text.

What MLflow has and Cairn does not (``ILIKE``, ``dataset.`` columns, ``metrics.x`` compared
with text) is refused with ``InvalidInput`` naming it: never dropped.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cairn.errors import InvalidInput
from cairn.proto.lexer import tokenize

__all__ = [
    "STATUS_FROM_CAIRN",
    "STATUS_TO_CAIRN",
    "iso_of_ms",
    "ms_of_iso",
    "to_cairn_filter",
    "to_cairn_order",
]

#: MLflow's run statuses -> Cairn's (a search for one MLflow status may match several)
STATUS_TO_CAIRN: dict[str, tuple[str, ...]] = {
    "RUNNING": ("Running", "Preparing", "CancelRequested"),
    "SCHEDULED": ("NotStarted", "Queued"),
    "FINISHED": ("Completed",),
    "FAILED": ("Failed",),
    "KILLED": ("Canceled",),
}
STATUS_FROM_CAIRN = {c: m for m, cs in STATUS_TO_CAIRN.items() for c in cs}

_PREFIXES = {
    "metrics": "metrics",
    "metric": "metrics",
    "params": "params",
    "param": "params",
    "parameters": "params",
    "parameter": "params",
    "tags": "tags",
    "tag": "tags",
    "attributes": "",
    "attribute": "",
    "attr": "",
    "run": "",
}
_ATTRIBUTES = {
    "run_id": "run_id",
    "run_uuid": "run_id",
    "run_name": "name",
    "status": "status",
    "start_time": "start_time",
    "end_time": "end_time",
    "created": "created_at",
    "creation_time": "created_at",
    "user_id": "created_by",
}
_TIMES = frozenset({"start_time", "end_time", "created_at"})
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
    | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<op>!=|<>|<=|>=|=|<|>|\(|\)|,)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:`[^`]*`|"[^"]*"|[A-Za-z0-9_:\-/]+))*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = frozenset({"AND", "OR", "IN", "NOT", "IS", "NULL", "LIKE", "ASC", "DESC"})


def _column(word: str, what: str) -> tuple[str, str]:
    """(Cairn column text, kind: metric|params|tags|attribute name)."""
    head, dot, rest = word.partition(".")
    if head.upper() in _KEYWORDS and not dot:
        return head.upper(), "keyword"
    if not dot:
        prefix, key = "", head
    elif head.lower() in _PREFIXES:
        prefix, key = _PREFIXES[head.lower()], rest
    else:
        raise InvalidInput(
            f"{what}: {word!r:.80} is not a column (metrics., params., tags., attributes.)"
        )
    if len(key) >= 2 and key[0] == key[-1] and key[0] in '`"':
        key = key[1:-1]
    if not key or "`" in key:
        raise InvalidInput(f"{what}: {word!r:.80} names no key")
    if prefix:
        return f"{prefix}.`{key}`", prefix
    name = _ATTRIBUTES.get(key.lower())
    if name is None:
        raise InvalidInput(f"{what}: unknown attribute {key!r:.80} (one of {sorted(_ATTRIBUTES)})")
    return name, name


def iso_of_ms(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def ms_of_iso(text: str | None) -> int | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _unquote(text: str) -> str:
    return text[1:-1].replace(text[0] * 2, text[0])


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _value(column: str, kind: str, value: str, what: str) -> list[str]:
    """A value compared with ``column``, as Cairn reads it (a status may become several)."""
    if column == "status" and kind == "string":
        found = STATUS_TO_CAIRN.get(_unquote(value).upper())
        if found is None:
            raise InvalidInput(f"{what}: {value} is not a run status ({sorted(STATUS_TO_CAIRN)})")
        return [_quote(s) for s in found]
    if column in _TIMES and kind == "number":
        return [_quote(iso_of_ms(float(value)))]
    return [value]


def to_cairn_filter(text: str) -> str:
    """MLflow's ``filter_string`` as a ``run.list`` filter."""
    what = "filter"
    tokens = tokenize(_TOKEN, text, what)
    out: list[str] = []
    column, col_kind = "", ""
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "word":
            text_, col_kind = _column(value, what)
            if col_kind == "keyword":
                if text_ == "ILIKE":
                    raise InvalidInput(f"{what}: ILIKE is not supported; use LIKE")
                out.append(text_)
            else:
                column = text_
                out.append(text_)
        elif kind in ("string", "number"):
            values = _value(column, kind, value, what)
            if len(values) > 1:
                # status = 'RUNNING' may be several Cairn statuses: an IN list
                op = out.pop() if out and out[-1] in ("=", "!=") else None
                if op is None:
                    raise InvalidInput(f"{what}: compare status with = or != only")
                out.pop()  # the column: written again for each value
                if op == "=":
                    out.append(f"{column} IN (" + ", ".join(values) + ")")
                else:
                    out.append("(" + " AND ".join(f"{column} != {v}" for v in values) + ")")
            else:
                out.append(values[0])
        elif value == "<>":
            out.append("!=")
        else:
            out.append(value)
        i += 1
    return " ".join(out).replace("( ", "(").replace(" )", ")").replace(" ,", ",")


def to_cairn_order(keys: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """MLflow's ``order_by`` keys (``metrics.loss DESC``, ``attributes.start_time``)."""
    out: list[str] = []
    for key in keys:
        tokens = tokenize(_TOKEN, key, "order_by")
        if not tokens or tokens[0][0] != "word" or len(tokens) > 2:
            raise InvalidInput(f"order_by: {key!r:.80} is not '<column> [ASC|DESC]'")
        column, kind = _column(tokens[0][1], "order_by")
        if kind == "keyword":
            raise InvalidInput(f"order_by: {key!r:.80} names no column")
        direction = tokens[1][1].upper() if len(tokens) == 2 else "ASC"
        if direction not in ("ASC", "DESC"):
            raise InvalidInput(f"order_by: {key!r:.80}: ASC or DESC")
        out.append(f"{column} {direction}")
    return tuple(out)
