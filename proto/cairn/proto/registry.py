"""The model registry's messages: versions allocated by the subject CAS, aliases moved by
events, every version's bytes named by digests the artifact service committed.

A version's ``source`` is never a URI or a path the client makes up: it is a run file path (or
folder prefix) of a run, or of a staging area the SDK uploaded local files into, and the
registry copies the digests the artifact service recorded there.
"""

from __future__ import annotations

import msgspec

from cairn.proto._base import Count, Id, Name, TagKey, TagValue, Text
from cairn.proto.commands import AsOfQuery, Command, Query

__all__ = [
    "ArchiveModelVersion",
    "GetModel",
    "ListModels",
    "ModelAliasHistory",
    "ModelLineage",
    "RegisterModelVersion",
    "SetModelAlias",
]


class RegisterModelVersion(Command, frozen=True, kw_only=True, tag=True):
    """Exactly one of ``run_id`` and ``staging_id`` names whose committed files ``path``
    (a file, or a folder prefix) refers to."""

    VERB = "model.register"
    name: Name
    path: Text
    run_id: Id | None = None
    staging_id: Id | None = None
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    properties: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    framework: Name | None = None
    framework_version: Name | None = None


class SetModelAlias(Command, frozen=True, kw_only=True, tag=True):
    VERB = "model.alias"
    name: Name
    alias: Id
    version: Count


class ArchiveModelVersion(Command, frozen=True, kw_only=True, tag=True):
    VERB = "model.archive"
    name: Name
    version: Count
    restore: bool = False


class GetModel(AsOfQuery, frozen=True, kw_only=True, tag=True):
    """One version by number, ``latest`` (no version, no alias) or alias, optionally as the
    registry stood at a stream sequence or a moment."""

    NAME = "model.get"
    name: Name
    version: Count | None = None
    alias: Id | None = None


class ListModels(AsOfQuery, frozen=True, kw_only=True, tag=True):
    NAME = "model.list"
    name: Name | None = None
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    latest: bool = False
    include_archived: bool = False


class ModelLineage(Query, frozen=True, kw_only=True, tag=True):
    NAME = "model.lineage"
    name: Name
    version: Count


class ModelAliasHistory(Query, frozen=True, kw_only=True, tag=True):
    """Every move of the model's aliases, oldest first: which alias, to which version, from
    which (``None`` when it was new), when, by whom, at which stream sequence."""

    NAME = "model.alias_history"
    name: Name
