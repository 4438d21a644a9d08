"""The model aggregate: one per registered name; versions 1, 2, 3... allocated by the subject
CAS (two registrations racing get N and N+1, never two N), aliases moved by events."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from cairn.domain import Aggregate
from cairn.errors import InvalidInput, NotFound
from cairn.proto.events import (
    Event,
    ModelAliasSet,
    ModelFile,
    ModelVersionArchived,
    ModelVersionRegistered,
    ModelVersionRestored,
)
from cairn.proto.registry import ArchiveModelVersion, RegisterModelVersion, SetModelAlias

__all__ = [
    "AGGREGATE",
    "KIND",
    "AliasMove",
    "ModelCommand",
    "ModelState",
    "RegisterResolvedModel",
    "alias_moves",
    "decide",
    "evolve",
    "fold",
    "resolve",
]

KIND = "model"


class ModelState(msgspec.Struct, frozen=True, kw_only=True):
    versions: dict[int, ModelVersionRegistered] = msgspec.field(default_factory=dict)
    archived: frozenset[int] = frozenset()
    aliases: dict[str, int] = msgspec.field(default_factory=dict)
    #: the highest version registered (0: none yet)
    latest: int = 0


def evolve(state: ModelState, event: Event) -> ModelState:
    match event:
        case ModelVersionRegistered(version=version):
            versions = {**state.versions, version: event}
            return msgspec.structs.replace(
                state, versions=versions, latest=max(state.latest, version)
            )
        case ModelAliasSet(alias=alias, version=version):
            return msgspec.structs.replace(state, aliases={**state.aliases, alias: version})
        case ModelVersionArchived(version=version):
            return msgspec.structs.replace(state, archived=state.archived | {version})
        case ModelVersionRestored(version=version):
            return msgspec.structs.replace(state, archived=state.archived - {version})
    return state


def fold(events: Iterable[Event], onto: ModelState | None = None) -> ModelState:
    """The same state as folding ``evolve`` over ``events`` (from ``onto``, or from nothing),
    built in one pass: a model can have thousands of versions, and copying its dictionaries per
    event would be quadratic. ``onto``'s dictionaries are extended in place, so pass only a
    state that nothing else still reads (the registry's own fold of a busy model)."""
    versions: dict[int, ModelVersionRegistered] = onto.versions if onto else {}
    aliases: dict[str, int] = onto.aliases if onto else {}
    archived: set[int] = set(onto.archived) if onto else set()
    latest = onto.latest if onto else 0
    for event in events:
        match event:
            case ModelVersionRegistered(version=version):
                versions[version] = event
                latest = max(latest, version)
            case ModelAliasSet(alias=alias, version=version):
                aliases[alias] = version
            case ModelVersionArchived(version=version):
                archived.add(version)
            case ModelVersionRestored(version=version):
                archived.discard(version)
    return ModelState(
        versions=versions, archived=frozenset(archived), aliases=aliases, latest=latest
    )


class AliasMove(msgspec.Struct, frozen=True, kw_only=True):
    """One move of an alias: the ``index``-th event of the history pointed ``alias`` at
    ``version``, away from ``previous`` (``None``: the alias was new)."""

    index: int
    alias: str
    version: int
    previous: int | None


def alias_moves(events: Iterable[Event]) -> list[AliasMove]:
    """Every alias move in a model's history, oldest first."""
    current: dict[str, int] = {}
    moves = []
    for index, event in enumerate(events):
        if isinstance(event, ModelAliasSet):
            previous = current.get(event.alias)
            moves.append(
                AliasMove(index=index, alias=event.alias, version=event.version, previous=previous)
            )
            current[event.alias] = event.version
    return moves


class RegisterResolvedModel(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """``RegisterModelVersion`` with what the registry resolved its source to: the committed
    ``files``, and the ``datasets`` (``name:version``) and ``environment`` the source run read
    and ran in."""

    command: RegisterModelVersion
    files: list[ModelFile]
    datasets: list[str] = msgspec.field(default_factory=list)
    environment: str | None = None


ModelCommand = RegisterResolvedModel | SetModelAlias | ArchiveModelVersion


def decide(state: ModelState, command: ModelCommand) -> list[Event]:
    match command:
        case RegisterResolvedModel():
            return _register(state, command)
        case SetModelAlias():
            return _alias(state, command)
        case ArchiveModelVersion():
            return _archive(state, command)


def _register(state: ModelState, resolved: RegisterResolvedModel) -> list[Event]:
    """The next version."""
    cmd = resolved.command
    return [
        ModelVersionRegistered(
            name=cmd.name,
            version=state.latest + 1,
            files=resolved.files,
            source_run_id=cmd.run_id,
            source_path=cmd.path,
            description=cmd.description,
            tags=cmd.tags,
            properties=cmd.properties,
            framework=cmd.framework,
            framework_version=cmd.framework_version,
            datasets=resolved.datasets,
            environment=resolved.environment,
        )
    ]


def _existing(state: ModelState, name: str, version: int) -> None:
    if version not in state.versions:
        raise NotFound(f"model {name!r} has no version {version}")


def _alias(state: ModelState, cmd: SetModelAlias) -> list[Event]:
    _existing(state, cmd.name, cmd.version)
    if cmd.version in state.archived:
        raise InvalidInput(f"version {cmd.version} of {cmd.name!r} is archived")
    if state.aliases.get(cmd.alias) == cmd.version:
        return []
    return [ModelAliasSet(alias=cmd.alias, version=cmd.version)]


def _archive(state: ModelState, cmd: ArchiveModelVersion) -> list[Event]:
    _existing(state, cmd.name, cmd.version)
    archived = cmd.version in state.archived
    if cmd.restore:
        return [ModelVersionRestored(version=cmd.version)] if archived else []
    if cmd.version in state.aliases.values():
        raise InvalidInput(f"version {cmd.version} of {cmd.name!r} still has an alias")
    return [] if archived else [ModelVersionArchived(version=cmd.version)]


def resolve(state: ModelState, name: str, version: int | None, alias: str | None) -> int:
    """A version number from a number, an alias, or neither (the latest not archived)."""
    if version is not None:
        _existing(state, name, version)
        return version
    if alias is not None:
        if alias not in state.aliases:
            raise NotFound(f"model {name!r} has no alias {alias!r}")
        return state.aliases[alias]
    live = [v for v in state.versions if v not in state.archived]
    if not live:
        raise NotFound(f"no model called {name!r}")
    return max(live)


AGGREGATE: Aggregate[ModelState, ModelCommand] = Aggregate(
    kind=KIND,
    initial=ModelState(),
    evolve=evolve,
    decide=decide,
    commands=ModelCommand,
    fold_onto=fold,
)
