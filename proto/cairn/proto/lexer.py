"""The tokenizer of the filter and order expressions that travel as text in queries (the runs
query's ``filter`` and ``order_by``, and MLflow's ``filter_string`` rewritten into them).

Each grammar keeps its own token pattern (a regular expression with one named group per token
kind, each alternative led by ``\\s*``); this is the one loop that reads a text with it, so
both read text the same way and refuse what they cannot read the same way.
"""

from __future__ import annotations

import re

from cairn.proto.errors import InvalidInput

__all__ = ["tokenize"]


def tokenize(pattern: re.Pattern[str], text: str, what: str) -> list[tuple[str, str]]:
    """``text`` as ``(kind, token)`` pairs, ``kind`` the name of the group of ``pattern``
    that matched. Whitespace between tokens and at either end is skipped; anything else that
    ``pattern`` does not match raises ``InvalidInput`` naming ``what`` and showing (up to 40
    characters of) the text from there."""
    out: list[tuple[str, str]] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = pattern.match(text, pos)
        if m is None or m.end() == pos or m.lastgroup is None:
            raise InvalidInput(f"{what}: cannot read {text[pos:].strip()[:40]!r}")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out
