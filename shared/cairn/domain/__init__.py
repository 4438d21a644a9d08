"""The pure domain: per aggregate ``evolve(state, event) -> state`` and
``decide(state, command) -> list[Event]``. No I/O, no clock reads.

Each domain module describes its aggregate once, as an :class:`Aggregate`: its kind (the
subject token ``cairn.ev.<ws>.<kind>.<id>``), its initial state, ``evolve``, and ``decide`` over
the aggregate's command union (one ``match``). The bus runs load, fold, decide and append once
for every aggregate (``cairn.bus.execute``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cairn.proto.events import Event

__all__ = ["Aggregate", "fold"]

S = TypeVar("S")
C = TypeVar("C")


def fold(initial: S, evolve: Callable[[S, Event], S], events: Iterable[Event]) -> S:
    """The state after ``events``, starting from ``initial``."""
    state = initial
    for event in events:
        state = evolve(state, event)
    return state


@dataclass(frozen=True, eq=False)
class Aggregate(Generic[S, C]):
    """One aggregate's shape.

    ``commands`` is the command union ``decide`` takes (a type or a ``X | Y`` union), so a test
    can walk it. ``fold_onto`` optionally folds many events in one pass, continuing from a state
    it may extend in place (a model with thousands of versions); it must give what folding
    ``evolve`` gives. Without it, :meth:`fold` folds ``evolve``.
    """

    kind: str
    initial: S
    evolve: Callable[[S, Event], S]
    decide: Callable[[S, C], list[Event]]
    commands: Any
    fold_onto: Callable[[Iterable[Event], S | None], S] | None = None

    def fold(self, events: Iterable[Event], onto: S | None = None) -> S:
        """The state after ``events``, from ``onto`` (default: the initial state). With
        ``fold_onto``, ``onto`` may be changed in place: pass only a state nothing else reads."""
        if self.fold_onto is not None:
            return self.fold_onto(events, onto)
        return fold(self.initial if onto is None else onto, self.evolve, events)
