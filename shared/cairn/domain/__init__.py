"""The pure domain: per aggregate ``evolve(state, event) -> state`` and
``decide(state, command) -> list[Event]``. No I/O, no clock reads."""
