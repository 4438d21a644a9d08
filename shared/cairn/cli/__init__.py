"""The ``cairn`` command line: one group, its commands in a module per area."""

from __future__ import annotations

import sys

import click

from cairn.cli import (  # noqa: F401  (they register the commands)
    _admin,
    _audit,
    _backup,
    _batch,
    _cluster,
    _data,
    _events,
    _jobs,
    _online,
    _pipelines,
    _portable,
    _projection,
    _registry,
    _schedules,
    _stack,
    _sweeps,
    _tokens,
    _tracking,
)
from cairn.cli._base import cli
from cairn.cli._secrets import add_rotate_key
from cairn.errors import CairnError

add_rotate_key()  # once every module has registered its commands: into any workspace group

__all__ = ["cli", "main"]


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CairnError as exc:
        click.echo(f"error [{exc.code}]: {exc.message}", err=True)
        sys.exit(1)
