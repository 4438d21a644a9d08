"""The distributed profile: ``cairn cluster certs`` (a CA, the server's and clients' TLS
certificates)."""

from __future__ import annotations

from pathlib import Path

import click

from cairn.cli._base import cli
from cairn.tls import DEFAULT_DAYS, DEFAULT_HOSTS, MAX_DAYS, make_certs


@cli.group()
def cluster() -> None:
    """The distributed profile: a nats-server that other machines reach, over TLS.

    \b
    Example:
      cairn cluster certs --dir ./tls --host nats.example.org --client cairn-agent
    """


@cluster.command()
@click.option(
    "--dir",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder of the CA and the certificates (made 0700; a CA found there is reused)",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="a name or IP address clients reach the server by, for its certificate; repeatable"
    f" (default: {' and '.join(DEFAULT_HOSTS)})",
)
@click.option(
    "--client",
    "clients",
    multiple=True,
    help="make a client certificate with this name (CN), for mutual TLS, e.g. cairn-agent;"
    " repeatable",
)
@click.option(
    "--days",
    type=click.IntRange(1, MAX_DAYS),
    default=DEFAULT_DAYS,
    show_default=True,
    help=f"how long the server and client certificates are valid (at most {MAX_DAYS})",
)
@click.option(
    "--force",
    is_flag=True,
    help="replace a server or client certificate and key that exist (never the CA)",
)
@click.option(
    "--no-server",
    is_flag=True,
    help="make client certificates only, keeping the server's as it is",
)
def certs(
    folder: Path,
    hosts: tuple[str, ...],
    clients: tuple[str, ...],
    days: int,
    force: bool,
    no_server: bool,
) -> None:
    """Make a CA (ECDSA P-256, reused if --dir holds one), a certificate for nats-server whose
    names are the --host values, and a client certificate per --client name. Private keys
    are written 0600; existing certificates are kept unless --force. The server's tls block
    and the clients' settings (CAIRN_TLS_CA, CAIRN_TLS_CERT, CAIRN_TLS_KEY) are printed.

    \b
    Example:
      cairn cluster certs --dir ./tls --host nats.example.org --host 10.0.0.5 --client cairn-agent
    """
    from cairn.tls import server_tls_block

    made = make_certs(
        folder, hosts=hosts, clients=clients, days=days, force=force, server=not no_server
    )
    for path in made.reused[:1]:
        click.echo(f"reused the CA {path}")
    for path in made.made:
        click.echo(f"wrote {path}")
    if not no_server:
        click.echo("\nnats-server (verify: true requires a client certificate of every client):")
        tls = (made.server_cert.resolve(), made.server_key.resolve(), made.ca.resolve())
        for line in server_tls_block(*tls):
            click.echo(f"  {line}")
    click.echo("\nclients:")
    click.echo(f"  CAIRN_TLS_CA={made.ca.resolve()}")
    for name in clients:
        click.echo(
            f"  {name}: CAIRN_TLS_CERT={made.client_cert(name).resolve()}"
            f" CAIRN_TLS_KEY={made.client_key(name).resolve()}"
        )
