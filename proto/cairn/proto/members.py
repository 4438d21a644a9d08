"""Workspace membership: who may address a workspace, with which roles there.

Membership is data in the log: events of the workspace aggregate
(``cairn.ev.<ws>.workspace.<ws>``), folded by every service process into the view its request
path checks (:mod:`cairn.members`). The commands travel on the ``member`` family
(``cairn.cmd.<ws>.member.*``), which the server lets the admin user alone publish
(docs/security.md); ``member.list`` is a query like any other (members of the workspace, and
the admin, may ask it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal, get_args

import msgspec

from cairn.proto._base import Id
from cairn.proto.commands import Command, Query
from cairn.proto.errors import InvalidInput

__all__ = [
    "MEMBER_COMMAND_TYPES",
    "MEMBER_QUERY_TYPES",
    "ROLE_NAMES",
    "AddMember",
    "AdoptWorkspace",
    "ListMembers",
    "RemoveMember",
    "Role",
    "Roles",
    "canonical_roles",
]

#: a member's roles in one workspace: what the role matrix of docs/security.md calls them
Role = Literal["data_scientist", "compute_operator", "auditor"]
_ROLES: tuple[Role, ...] = get_args(Role)
ROLE_NAMES: tuple[str, ...] = _ROLES
#: the roles a command gives: one to three
Roles = Annotated[list[Role], msgspec.Meta(min_length=1, max_length=len(ROLE_NAMES))]


def canonical_roles(roles: Iterable[str]) -> list[Role]:
    """``roles`` once each, in the order of ``ROLE_NAMES`` (how the log records them, so that
    the same roles always compare equal); ``InvalidInput`` names one that is no role."""
    given = set(roles)
    unknown = sorted(given - set(_ROLES))
    if unknown:
        raise InvalidInput(f"{unknown[0]!r:.40} is no role; roles are {', '.join(_ROLES)}")
    return [r for r in _ROLES if r in given]


class AddMember(Command, frozen=True, kw_only=True, tag=True):
    """Make ``user`` a member of the workspace with ``roles`` there; a member already gets
    these roles instead of the ones they had (the same roles again: nothing to do)."""

    VERB = "member.add"
    user: Id
    roles: Roles


class RemoveMember(Command, frozen=True, kw_only=True, tag=True):
    """``user`` is no longer a member (``NotFound`` when they were not one)."""

    VERB = "member.remove"
    user: Id


class AdoptWorkspace(Command, frozen=True, kw_only=True, tag=True):
    """The migration of a workspace from before membership existed: ``user`` becomes its
    member with ``roles`` if the workspace never had a member; otherwise nothing happens.
    ``cairn up`` sends it for its local person (docs/security.md)."""

    VERB = "member.adopt"
    user: Id
    roles: Roles


class ListMembers(Query, frozen=True, kw_only=True, tag=True):
    """The workspace's members and their roles, by user name."""

    NAME = "member.list"


MEMBER_COMMAND_TYPES: tuple[type[Command], ...] = (AddMember, RemoveMember, AdoptWorkspace)
MEMBER_QUERY_TYPES: tuple[type[Query], ...] = (ListMembers,)
