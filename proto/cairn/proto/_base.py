"""Field types shared by every message, and the bases that check them.

Integers are bounded to what a signed 64-bit column (SQLite, and most readers in other
languages) can hold, or tighter: an integer past that range is refused at decoding, so it can
never reach a read model. Names and tag keys are checked character by character: a control or
format character (the bidirectional overrides among them) is refused by its code point.
"""

from __future__ import annotations

import re
import types
import typing
import unicodedata
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from cairn.proto.errors import InvalidInput, InvalidName

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Checked",
    "Count",
    "Digest",
    "Id",
    "Int64",
    "Key",
    "MetricName",
    "Name",
    "Strict",
    "TagKey",
    "TagValue",
    "Text",
    "refuse_invisible",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Marks the string types that ``Checked`` messages check: names (character by character)
#: and tokens (the ``Id`` pattern, with a refused character named by its code point).
_NAMED = "cairn:named"
_TOKEN = "cairn:token"
_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_TOKEN_RE = re.compile(_TOKEN_PATTERN)
#: what a JSON Schema reader in another language can check of a name (the C0 controls; the
#: code checks every control and format character)
_NO_CONTROLS = {"pattern": r"^[^\x00-\x1f\x7f]+$"}

#: Any integer: what a signed 64-bit column holds.
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
#: A count, size, offset, step, version, attempt or stream sequence: never negative.
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
#: A subject-safe token: ids of workspaces, runs, commands, agents.
Id = Annotated[str, msgspec.Meta(pattern=_TOKEN_PATTERN)]
#: An ``Id`` a person types (a datastore or compute target's name), in the messages people
#: send: checked by ``Checked`` so that a refusal names a control character's code point.
Key = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": _TOKEN_PATTERN}), _TOKEN]
#: A free-form, user-facing name (mapped to an ``Id`` before it reaches a subject).
Name = Annotated[
    str, msgspec.Meta(min_length=1, max_length=256, extra_json_schema=_NO_CONTROLS), _NAMED
]
#: Free text such as descriptions and error details.
Text = Annotated[str, msgspec.Meta(max_length=16384)]
#: A content address: ``sha256:`` and 64 lowercase hex digits.
Digest = Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}$")]
TagKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=255, extra_json_schema=_NO_CONTROLS), _NAMED
]
TagValue = Annotated[str, msgspec.Meta(max_length=5000)]
#: Metric names: 1-255 characters (spaces and punctuation allowed, as in Azure ML); the
#: ingester refuses control characters once per distinct name in a batch (a pattern here
#: would run once per point, on every decode).
MetricName = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]

#: Unicode categories refused in names: controls, format characters (bidirectional
#: overrides and isolates, zero-width characters), surrogates, line and paragraph separators.
_REFUSED = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def refuse_invisible(value: str, what: str, error: type[InvalidInput] = InvalidName) -> str:
    """Return ``value`` unless it holds a control or format character; else raise ``error``
    naming the first one by its code point."""
    if value.isprintable():  # the common case: one C-level scan
        return value
    for char in value:
        if unicodedata.category(char) in _REFUSED:
            label = unicodedata.name(char, "a control character")
            raise error(
                f"{what} {value!r:.80} contains U+{ord(char):04X} ({label}), a control or"
                " format character"
            )
    return value


def _refuse_name(value: str, what: str) -> None:
    refuse_invisible(value, what, InvalidInput)


def _refuse_token(value: str, what: str) -> None:
    if not _TOKEN_RE.match(value):
        refuse_invisible(value, what, InvalidInput)
        raise InvalidInput(f"{what} {value!r:.80} must match [A-Za-z0-9_-]{{1,64}}")


#: a field of a message is refused as any malformed field is (``InvalidInput``); a path or a
#: subject token as ``InvalidName``, as they always were
_CHECKS: dict[str, Callable[[str, str], None]] = {_NAMED: _refuse_name, _TOKEN: _refuse_token}


def _marks(hint: Any) -> tuple[str | None, str | None]:
    """The marks of one field's type: (of its value, of its keys when it is a dict)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return next((m for m in args[1:] if m in _CHECKS), None), None
    if origin is dict:
        return None, _marks(args[0])[0]
    if origin in (typing.Union, types.UnionType):
        found = [_marks(a) for a in args]
        return next((v for v, _ in found if v), None), next((k for _, k in found if k), None)
    return None, None


_marked_fields: dict[type, tuple[tuple[str, str | None, str | None], ...]] = {}


def _fields_of(cls: type) -> tuple[tuple[str, str | None, str | None], ...]:
    found = _marked_fields.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: tuple[str, ...] = getattr(cls, "__struct_fields__", ())
        marked = ((name, *_marks(hints[name])) for name in fields)
        found = _marked_fields[cls] = tuple(m for m in marked if m[1] or m[2])
    return found


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    """A message whose names, tag keys and typed tokens (``Key``) are checked for control and
    format characters, when it is built and when it is decoded."""

    def __post_init__(self) -> None:
        for name, value_mark, key_mark in _fields_of(type(self)):
            value = getattr(self, name)
            what = f"{type(self).__name__}.{name}"
            if value_mark is not None and isinstance(value, str):
                _CHECKS[value_mark](value, what)
            elif key_mark is not None and isinstance(value, dict):
                for key in value:
                    _CHECKS[key_mark](key, f"a key of {what}")


class Strict(Checked, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a client sends (commands, queries and the structs inside them): a field this
    version does not know is an error naming it, never silently dropped."""
