"""``cairn token``: API tokens of the people of the embedded server, for the gateway's HTTP API
(``Authorization: Bearer <token>``), on the machine of ``cairn up``."""

from __future__ import annotations

import click

from cairn.cli._base import cli, done, emit, json_option, settings


@cli.group()
def token() -> None:
    """API tokens: each acts as its person, with their roles and memberships, until revoked.

    A token is a server user of its own, so 'cairn token revoke' makes the running server
    close its connections at once (a config reload, as 'cairn user' does). Like 'cairn user',
    it edits this home's credentials.json: whoever can write the home (the admin of this
    stack) may make tokens for any of its people, everyone else asks them for one.

    \b
    Example:
      cairn token create --name ci
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8742/w/default/experiments
    """


@token.command("create")
@click.option("--name", default="", help="what the token is for (shown by 'cairn token list')")
@click.option(
    "--user",
    "person",
    default=None,
    help="the person the token acts as (default: this home's local person); any person of"
    " this home, for whoever can write the home",
)
@json_option
def token_create(name: str, person: str | None, as_json: bool) -> None:
    """Make an API token and print it, this once (a lost token is revoked and made again).

    \b
    Example:
      cairn token create --name ci --user bea
    """
    from cairn.embedded._users import create_token

    row, secret, loaded = create_token(settings().home_path, person, name)
    done(
        as_json,
        {**row, "token": secret, "loaded": loaded},
        f"token {row['id']} of {row['user']} created",
        "the running server loaded it"
        if loaded
        else "no server runs over this home: the next 'cairn up' loads it",
        "it is shown this once; send it as  Authorization: Bearer <token>",
        secret,
    )


@token.command("list")
@click.option("--user", "person", default=None, help="only this person's tokens")
@json_option
def token_list(person: str | None, as_json: bool) -> None:
    """The tokens of this home's people: id, person, name, when made (never the token)."""
    from cairn.embedded._users import list_tokens

    rows = list_tokens(settings().home_path, person)
    columns = [("id", "ID"), ("user", "USER"), ("name", "NAME"), ("created", "CREATED")]
    emit(rows, as_json, columns)


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@json_option
def token_revoke(token_id: str, as_json: bool) -> None:
    """Revoke the token ID: it stops working, and the running server closes its connections.

    \b
    Example:
      cairn token revoke 3f9c2a7d01be
    """
    from cairn.embedded._users import revoke_token

    row, loaded = revoke_token(settings().home_path, token_id)
    tail = "the running server closed its connections" if loaded else "no server runs here"
    done(as_json, {**row, "revoked": True, "loaded": loaded}, f"token {token_id} revoked; {tail}")
