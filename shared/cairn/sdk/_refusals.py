"""Nothing accepted is ignored: every parameter of the SDK's public callables is used by its
body, or named here with what Cairn does instead.

``@refuses(name="what Cairn does instead")`` makes a call that gives ``name`` a value other
than its default raise :class:`~cairn.errors.Unsupported` naming it, before the body runs.
``@inherent(name="why")`` records a parameter whose every value Cairn already honours
without looking at it (``wait_post_processing``: a run ends only once its files are
stored). Both registries are read by a test that walks every public signature
(``tests/sdk/test_nothing_ignored.py``) and by ``docs/design.md``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from cairn.errors import Unsupported

__all__ = ["INHERENT", "REFUSED", "inherent", "refuse", "refuses"]

P = ParamSpec("P")
T = TypeVar("T")

#: attribute names the registries live under on the decorated function
REFUSED = "__cairn_refused__"
INHERENT = "__cairn_inherent__"


def refuse(where: str, name: str, instead: str) -> Unsupported:
    """The error for ``name`` given to ``where``."""
    return Unsupported(f"{where}: {name}= is not supported; {instead}")


def _given(value: Any, default: Any) -> bool:
    if value is default:
        return False
    try:
        return bool(value != default)
    except Exception:  # an object without a plain ==: given
        return True


def refuses(**reasons: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Refuse each named parameter when a call gives it a value other than its default."""

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        sig = inspect.signature(fn)
        unknown = set(reasons) - set(sig.parameters)
        assert not unknown, f"{fn.__qualname__} has no parameters {sorted(unknown)}"
        where = fn.__qualname__.replace(".__init__", "")

        @functools.wraps(fn)
        def checked(*args: P.args, **kwargs: P.kwargs) -> T:
            bound = sig.bind(*args, **kwargs).arguments
            for name, instead in reasons.items():
                if name in bound and _given(bound[name], sig.parameters[name].default):
                    raise refuse(where, name, instead)
            return fn(*args, **kwargs)

        setattr(checked, REFUSED, {**getattr(fn, REFUSED, {}), **reasons})
        return checked

    return wrap


def inherent(**reasons: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Record parameters whose every value Cairn honours without reading it, and why."""

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        missing = set(reasons) - set(inspect.signature(fn).parameters)
        assert not missing, f"{fn.__qualname__} has no parameters {sorted(missing)}"
        setattr(fn, INHERENT, {**getattr(fn, INHERENT, {}), **reasons})
        return fn

    return wrap
