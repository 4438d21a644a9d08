"""The pure domain: per aggregate ``evolve(state, event) -> state`` and
``decide(state, command) -> list[Event]``. No I/O, no clock reads."""

from collections.abc import Callable, Iterable
from typing import TypeVar

from cairn.proto.events import Event

__all__ = ["fold"]

S = TypeVar("S")


def fold(initial: S, evolve: Callable[[S, Event], S], events: Iterable[Event]) -> S:
    """The state after ``events``, starting from ``initial``."""
    state = initial
    for event in events:
        state = evolve(state, event)
    return state
