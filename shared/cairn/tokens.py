"""API tokens: how a token names the server user it logs in as.

A token is a user of the people's account of its own, ``<person>~<id>``, with its person's
permissions, made and revoked like any user (``cairn token create|revoke``: the server loads
the change and closes a revoked token's connections). The server attests the token's user on
every request; :func:`person_of` maps it back to the person, who is the actor of what the token
does. ``~`` is in no person's name (:func:`cairn.embedded._auth.check_person_name`), so only
the stack's own tools make such users.

The string handed out is ``cairn_<base64url(user)>.<secret>``: a gateway turns it back into
the user and password to connect with (:func:`parse_token`); it holds nothing else.
"""

from __future__ import annotations

import base64
import binascii

from cairn.errors import Unauthenticated

__all__ = ["TOKEN_MARK", "TOKEN_PREFIX", "format_token", "parse_token", "person_of"]

TOKEN_PREFIX = "cairn_"
#: between a person's name and a token's id in the token's user name
TOKEN_MARK = "~"
_MAX_TOKEN = 512


def format_token(user: str, secret: str) -> str:
    """The token string for server user ``user`` and its password ``secret``."""
    encoded = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
    return f"{TOKEN_PREFIX}{encoded}.{secret}"


def parse_token(token: str) -> tuple[str, str]:
    """``(user, secret)`` of a token string; ``Unauthenticated`` if it is not one."""
    if len(token) > _MAX_TOKEN or not token.startswith(TOKEN_PREFIX) or "." not in token:
        raise Unauthenticated("not a Cairn API token (cairn token create makes one)")
    encoded, secret = token[len(TOKEN_PREFIX) :].split(".", 1)
    try:
        user = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthenticated("not a Cairn API token (cairn token create makes one)") from exc
    if TOKEN_MARK not in user or not secret:
        raise Unauthenticated("not a Cairn API token (cairn token create makes one)")
    return user, secret


def person_of(user: str) -> str:
    """The person a server user acts for: itself, or a token's person."""
    return user.split(TOKEN_MARK, 1)[0]
