"""Azure ML v1's run filters (``tags=``, ``properties=``, ``status=``, ``include_children=``)
written as a filter of the runs query (``run.list``), so the read model does the filtering."""

from __future__ import annotations

from typing import Any

from cairn.domain.run import RunStatus
from cairn.errors import InvalidInput

__all__ = ["azure_filter", "quoted"]


def quoted(value: str) -> str:
    """A string value in a runs filter: single quotes, an inner quote doubled."""
    return "'" + value.replace("'", "''") + "'"


def _column(prefix: str, key: str, where: str) -> str:
    if "`" in key or not key:
        raise InvalidInput(f"{where}: {prefix} key {key!r} cannot be filtered on (a backtick)")
    return f"{prefix}.`{key}`"


def _keyed(prefix: str, wanted: str | dict[str, Any] | None, where: str) -> list[str]:
    if wanted is None:
        return []
    if isinstance(wanted, str):  # Azure: the key is there, whatever its value
        return [f"{_column(prefix, wanted, where)} IS NOT NULL"]
    if isinstance(wanted, dict):
        return [f"{_column(prefix, k, where)} = {quoted(str(v))}" for k, v in wanted.items()]
    raise InvalidInput(f"{where}: {prefix}= takes a key or a {{key: value}} dict")


def azure_filter(
    where: str,
    *,
    type: str | None = None,
    tags: str | dict[str, Any] | None = None,
    properties: str | dict[str, Any] | None = None,
    status: str | None = None,
    include_children: bool = False,
    filter: str = "",
) -> str:
    """The runs-query filter for Azure ML v1's arguments (and an extra ``filter``); ``type``
    is refused by name: Cairn's runs carry no run type."""
    if type is not None:
        raise InvalidInput(f"{where}: type= is not supported (Cairn runs have no type)")
    terms = [*_keyed("tags", tags, where), *_keyed("properties", properties, where)]
    if status is not None:
        if status not in {s.value for s in RunStatus}:
            known = ", ".join(s.value for s in RunStatus)
            raise InvalidInput(f"{where}: status {status!r} is not one of {known}")
        terms.append(f"status = {quoted(status)}")
    if not include_children:
        terms.append("parent_run_id IS NULL")
    if filter.strip():
        terms.append(f"({filter})")
    return " AND ".join(terms)
