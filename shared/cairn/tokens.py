"""API tokens: how a token names the server user it logs in as.

A token is a user of the people's account of its own, ``<person>~<id>``, with its person's
permissions, made and revoked like any user (``cairn token create|revoke``: the server loads
the change and closes a revoked token's connections). The server attests the token's user on
every request; :func:`person_of` maps it back to the person, who is the actor of what the token
does. ``~`` is in no person's name (:data:`PERSON_NAME`, which
:func:`cairn.embedded._auth.check_person_name` applies), so only the stack's own tools make such
users. A token's id is :data:`TOKEN_ID`: 12 lower-case hex digits.

The string handed out is ``cairn_<base64url(user)>.<secret>``: a gateway turns it back into
the user and password to connect with (:func:`parse_token`); it holds nothing else.
"""

from __future__ import annotations

import base64
import binascii
import re

from cairn.errors import Unauthenticated

__all__ = [
    "PERSON_NAME",
    "TOKEN_ID",
    "TOKEN_MARK",
    "TOKEN_PREFIX",
    "format_token",
    "is_person_name",
    "is_user_name",
    "parse_token",
    "person_of",
]

TOKEN_PREFIX = "cairn_"
#: between a person's name and a token's id in the token's user name
TOKEN_MARK = "~"
_MAX_TOKEN = 512
#: a person's user name: lower-case letters, digits, ``_`` and ``-`` (it becomes a subject
#: token), starting with a letter; names starting with ``cairn`` are the stack's own
PERSON_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: a token's id, as ``cairn token create`` makes them
TOKEN_ID = re.compile(r"[0-9a-f]{12}")
_NOT_A_TOKEN = "not a Cairn API token (cairn token create makes one)"


def is_person_name(name: str) -> bool:
    """Whether ``name`` may be a person's user name (:data:`PERSON_NAME`, not ``cairn...``)."""
    return PERSON_NAME.fullmatch(name) is not None and not name.startswith("cairn")


def is_user_name(user: str) -> bool:
    """Whether ``user`` may be a person's server user: a person's name, or a token's
    ``<person>~<id>``."""
    person, mark, token_id = user.partition(TOKEN_MARK)
    return is_person_name(person) and (not mark or TOKEN_ID.fullmatch(token_id) is not None)


def format_token(user: str, secret: str) -> str:
    """The token string for server user ``user`` and its password ``secret``."""
    encoded = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
    return f"{TOKEN_PREFIX}{encoded}.{secret}"


def parse_token(token: str) -> tuple[str, str]:
    """``(user, secret)`` of a token string; ``Unauthenticated`` if it is not one: its user
    must be ``<person>~<id>`` (:data:`PERSON_NAME`, :data:`TOKEN_ID`), checked before anything
    connects with it."""
    if len(token) > _MAX_TOKEN or not token.startswith(TOKEN_PREFIX) or "." not in token:
        raise Unauthenticated(_NOT_A_TOKEN)
    encoded, secret = token[len(TOKEN_PREFIX) :].split(".", 1)
    try:
        user = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthenticated(_NOT_A_TOKEN) from exc
    if TOKEN_MARK not in user or not secret or not is_user_name(user):
        raise Unauthenticated(_NOT_A_TOKEN)
    return user, secret


def person_of(user: str) -> str:
    """The person a server user acts for: itself, or a token's person."""
    return user.split(TOKEN_MARK, 1)[0]
