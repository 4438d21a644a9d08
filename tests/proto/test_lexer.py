"""The one tokenizer loop of the query grammars (``cairn.proto.lexer``)."""

import re

import pytest

from cairn.errors import InvalidInput
from cairn.proto.lexer import tokenize

_PATTERN = re.compile(r"\s*(?:(?P<num>\d+)|(?P<op>[=<>])|(?P<word>[a-z]+))")


def test_tokens_are_named_by_the_group_that_matched() -> None:
    assert tokenize(_PATTERN, "  a = 1  ", "filter") == [("word", "a"), ("op", "="), ("num", "1")]
    assert tokenize(_PATTERN, "", "filter") == tokenize(_PATTERN, " \t\n", "filter") == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [("a = 1 ; drop", "'; drop'"), ("a =   ?x", "'?x'"), ("?" * 60, repr("?" * 40))],
)
def test_what_cannot_be_read_is_refused_naming_it(text: str, shown: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        tokenize(_PATTERN, text, "order_by")
    assert refused.value.message == f"order_by: cannot read {shown}"
