"""The workspace aggregate: its creation and its members.

A member has roles in the workspace (``data_scientist``, ``compute_operator``, ``auditor``);
the services refuse a person's request in a workspace they are not a member of, or whose
roles there do not allow it (:mod:`cairn.members`). Whoever creates a workspace becomes its
first member, with their roles, in the same batch as ``WorkspaceCreated``
(:class:`CreateAsMember`, which the tracking service makes from the command and the attested
creator). ``governed`` says whether the workspace ever had a member: one from before
membership existed never had, and :class:`~cairn.proto.members.AdoptWorkspace` gives it its
first (docs/security.md, the migration).
"""

from __future__ import annotations

import msgspec

from cairn.domain import Aggregate
from cairn.errors import InvalidInput, NotFound
from cairn.proto.commands import CreateWorkspace, SetDefaultDatastore
from cairn.proto.events import (
    DefaultDatastoreSet,
    Event,
    MemberAdded,
    MemberRemoved,
    MemberRolesChanged,
    WorkspaceCreated,
)
from cairn.proto.members import AddMember, AdoptWorkspace, RemoveMember, Role, canonical_roles

__all__ = [
    "AGGREGATE",
    "DEFAULT_DATASTORE",
    "KIND",
    "CreateAsMember",
    "WorkspaceCommand",
    "WorkspaceState",
    "decide",
    "evolve",
]

KIND = "workspace"


class CreateAsMember(msgspec.Struct, frozen=True, kw_only=True):
    """``command`` sent by person ``user``, who has ``roles`` (at least data scientist: the
    server lets no one else send workspace commands)."""

    command: CreateWorkspace
    user: str
    roles: tuple[str, ...]


WorkspaceCommand = (
    CreateWorkspace
    | CreateAsMember
    | AddMember
    | RemoveMember
    | AdoptWorkspace
    | SetDefaultDatastore
)

#: a workspace's default datastore until one is set
DEFAULT_DATASTORE = "workspaceblobstore"


class WorkspaceState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    name: str = ""
    description: str = ""
    #: user -> their roles here, in the order of ``ROLE_NAMES``
    members: dict[str, tuple[Role, ...]] = msgspec.field(default_factory=dict)
    #: whether the workspace ever had a member
    governed: bool = False
    default_datastore: str = DEFAULT_DATASTORE


def evolve(state: WorkspaceState, event: Event) -> WorkspaceState:
    match event:
        case WorkspaceCreated(name=name, description=description):
            return msgspec.structs.replace(state, exists=True, name=name, description=description)
        case MemberAdded(user=user, roles=roles) | MemberRolesChanged(user=user, roles=roles):
            members = {**state.members, user: tuple(roles)}
            return msgspec.structs.replace(state, members=members, governed=True)
        case MemberRemoved(user=user):
            members = {u: r for u, r in state.members.items() if u != user}
            return msgspec.structs.replace(state, members=members, governed=True)
        case DefaultDatastoreSet(datastore=datastore):
            return msgspec.structs.replace(state, default_datastore=datastore)
    return state


def _roles(given: list[Role] | tuple[str, ...]) -> list[Role]:
    roles = canonical_roles(given)
    if not roles:
        raise InvalidInput("a member needs at least one role")
    return roles


def _existing(state: WorkspaceState, command: object) -> None:
    if not state.exists:
        raise NotFound(f"the workspace does not exist ({type(command).__name__})")


def decide(state: WorkspaceState, command: WorkspaceCommand) -> list[Event]:
    """Creating a workspace that exists is a no-op (get-or-create); giving a member the roles
    they have is a no-op; removing someone who is not a member is ``NotFound``."""
    match command:
        case CreateWorkspace(name=name, description=description):
            return [] if state.exists else [WorkspaceCreated(name=name, description=description)]
        case CreateAsMember(command=CreateWorkspace(name=name, description=description)):
            if state.exists:
                return []
            creator = MemberAdded(user=command.user, roles=_roles(command.roles))
            return [WorkspaceCreated(name=name, description=description), creator]
        case AddMember(user=user, roles=given):
            _existing(state, command)
            roles = _roles(given)
            had = state.members.get(user)
            if had is None:
                return [MemberAdded(user=user, roles=roles)]
            return [] if list(had) == roles else [MemberRolesChanged(user=user, roles=roles)]
        case RemoveMember(user=user):
            _existing(state, command)
            if user not in state.members:
                raise NotFound(f"{user} is not a member of workspace {state.name}")
            return [MemberRemoved(user=user)]
        case AdoptWorkspace(user=user, roles=given):
            _existing(state, command)
            roles = _roles(given)
            return [] if state.governed else [MemberAdded(user=user, roles=roles)]
        case SetDefaultDatastore(datastore=datastore):
            _existing(state, command)
            if datastore == state.default_datastore:
                return []
            return [DefaultDatastoreSet(datastore=datastore)]


AGGREGATE: Aggregate[WorkspaceState, WorkspaceCommand] = Aggregate(
    kind=KIND, initial=WorkspaceState(), evolve=evolve, decide=decide, commands=WorkspaceCommand
)
