"""Run files: uploads in chunks over NATS to an artifact service instance, downloads by digest.

1. ``OpenUpload`` on ``cairn.cmd.<ws>.artifact.upload`` (any instance) checks the run and the
   path, and answers ``Opened`` with a subject that reaches that instance alone.
2. The client sends the bytes as requests on ``<subject>`` with a ``Cairn-Offset`` header, in
   order; each is answered once written.
3. ``CommitUpload`` on ``<subject>.commit`` compares the digest the service computed with the
   client's, stores the blob (once per content), and appends ``ArtifactCommitted``.

A file of at most ``INLINE_BYTES`` travels in ``OpenUpload`` itself (``data``): the service
checks and stores it and appends ``ArtifactCommitted`` at once, answering ``Accepted`` — one
request instead of three (a job's log and small outputs, a model's metadata files).

Downloads: ``GetRunFile`` (query ``artifact.get``) names the digest and size; ``ReadBlob`` on
``cairn.q.<ws>.blob.read`` returns up to ``length`` bytes from ``offset``.
"""

from __future__ import annotations

from cairn.proto._base import Count, Digest, Id, Text
from cairn.proto.commands import AsOfQuery, Command, Query

__all__ = [
    "CHUNK_BYTES",
    "INLINE_BYTES",
    "CommitUpload",
    "GetRunFile",
    "ListRunFiles",
    "OpenUpload",
    "ReadBlob",
]

CHUNK_BYTES = 256 * 1024
#: the most a file may hold to travel inside ``OpenUpload`` (base64 in JSON: ≈ 4/3 of it)
INLINE_BYTES = 64 * 1024


class OpenUpload(Command, frozen=True, kw_only=True, tag=True):
    """``run_id`` names the run the file belongs to; with ``staging`` it names a staging area
    instead (files uploaded to register a model from local disk), which needs no run."""

    VERB = "artifact.upload"
    run_id: Id
    path: Text
    size: Count
    staging: bool = False
    #: set by an agent uploading a job's outputs: refused unless still the current attempt
    attempt: Count = 0
    #: the whole file (``size`` bytes, at most ``INLINE_BYTES``): committed at once, under
    #: this command's id
    data: bytes | None = None


class CommitUpload(Command, frozen=True, kw_only=True, tag=True):
    VERB = "artifact.commit"
    digest: Digest


class ListRunFiles(AsOfQuery, frozen=True, kw_only=True, tag=True):
    NAME = "artifact.list"
    run_id: Id
    prefix: Text = ""


class GetRunFile(AsOfQuery, frozen=True, kw_only=True, tag=True):
    NAME = "artifact.get"
    run_id: Id
    path: Text


class ReadBlob(Query, frozen=True, kw_only=True, tag=True):
    NAME = "blob.read"
    digest: Digest
    offset: Count = 0
    length: Count = CHUNK_BYTES
