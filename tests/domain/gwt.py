"""Given-when-then tables for ``decide``: given these events, when this command, then these
events or this error."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, NamedTuple

import pytest

from cairn.domain import Aggregate
from cairn.errors import CairnError
from cairn.proto.events import Event


class Case(NamedTuple):
    """``then`` is the events ``decide`` returns, or the error type it raises (whose message
    must match ``match`` when given)."""

    id: str
    given: list[Event]
    when: Any
    then: list[Event] | type[CairnError]
    match: str | None = None


def check(aggregate: Aggregate[Any, Any], case: Case) -> None:
    state = aggregate.fold(case.given)
    if isinstance(case.then, list):
        assert aggregate.decide(state, case.when) == case.then
    else:
        with pytest.raises(case.then, match=case.match):
            aggregate.decide(state, case.when)


def command_types(aggregate: Aggregate[Any, Any]) -> tuple[type, ...]:
    """The types of ``aggregate``'s command union."""
    commands = aggregate.commands
    if isinstance(commands, types.UnionType) or typing.get_origin(commands) is typing.Union:
        return typing.get_args(commands)
    return (commands,)


def uncovered(aggregate: Aggregate[Any, Any], cases: Sequence[Case]) -> list[str]:
    """The command types of ``aggregate`` that no case sends."""
    sent = {type(case.when) for case in cases}
    return [t.__name__ for t in command_types(aggregate) if t not in sent]


def ids(cases: Sequence[Case]) -> list[str]:
    return [case.id for case in cases]
