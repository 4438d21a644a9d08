"""``cairn import``: an export (:mod:`cairn.portable._format`) into another home or cluster,
checked whole before anything is written, then its blobs, its events and its metric batches
stored in the export's order with their bytes and ``Nats-Msg-Id`` unchanged.

An import picks up where the target's history of the workspace ends: the target must hold
exactly what came before the export (nothing, for an export of everything) and, after that,
nothing but a first part of the export itself (an import repeated or cut short); anything
else is another history, and refused. So an import repeated is a no-op, and one cut short
finishes when run again (docs/design.md, *Export and import*)."""

from __future__ import annotations

import hashlib
import stat
import tempfile
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cairn.audit import event_digest, key_id_of, parse_public_key
from cairn.bus import Connection, EventStore, Stored
from cairn.errors import AlreadyExists, ConcurrencyConflict, InvalidInput
from cairn.portable._export import _stored
from cairn.portable._format import (
    ArtifactEntry,
    Line,
    Loaded,
    Part,
    check_checkpoints,
    load_export,
)
from cairn.proto import subjects
from cairn.proto.streams import EVENTS, METRICS
from cairn.storage import BlobStore

__all__ = ["Imported", "import_workspace", "verify_export"]

_CHUNK = 1 << 20


class Imported(NamedTuple):
    """What an import found and did."""

    workspace: str
    #: lines of the export stored now (or found stored meanwhile by another import of it),
    #: and those the target held already
    events: int
    events_present: int
    metrics: int
    metrics_present: int
    artifacts: int
    artifacts_present: int
    #: the export's chain hash after its last event, and how many events signed checkpoints
    #: of the source cover
    chain: str
    signed: int


def verify_export(root: Path, public: Ed25519PublicKey | None = None) -> tuple[Loaded, int]:
    """Read and check an export (its lines, digests, chain, files), and its checkpoints
    against ``public`` or, when none is given, against the key the export names; the export
    and how many of its events signed checkpoints cover."""
    loaded = load_export(root)
    key = public
    if key is None and loaded.manifest.audit_key:
        key = parse_public_key(loaded.manifest.audit_key, "the export's audit key")
    if public is not None and loaded.manifest.audit_key:
        named = parse_public_key(loaded.manifest.audit_key, "the export's audit key")
        if key_id_of(named) != key_id_of(public):
            raise InvalidInput(
                f"the export is refused: its checkpoints are signed by {key_id_of(named)},"
                f" not by the key trusted ({key_id_of(public)})"
            )
    return loaded, check_checkpoints(loaded, key)


def _artifact_path(loaded: Loaded, entry: ArtifactEntry) -> Path:
    """The artifact's file, which must be a plain file right in the export's artifacts/."""
    path = loaded.root / entry.file
    try:
        info = path.lstat()
    except OSError as exc:
        raise InvalidInput(f"the export is refused: {entry.file} is missing: {exc}") from exc
    inside = path.resolve().parent == (loaded.root / "artifacts").resolve()
    if not stat.S_ISREG(info.st_mode) or not inside:
        raise InvalidInput(f"the export is refused: {entry.file} is not a plain file")
    return path


def _check_artifact(loaded: Loaded, entry: ArtifactEntry) -> Path:
    path = _artifact_path(loaded, entry)
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    if "sha256:" + sha.hexdigest() != entry.digest or size != entry.size:
        raise InvalidInput(f"the export is refused: {entry.file} does not match its digest")
    return path


def _todo(what: str, ws: str, part: Part, lines: list[Line], held: list[Stored]) -> int:
    """How many of ``lines`` the target holds already (``held``: the workspace's messages
    there, in order); refuses a target whose history is not the export's."""
    digests = [event_digest(m.subject, m.msg_id, m.data) for m in held]
    before = part.prev_count
    if len(digests) < before or (before and digests[before - 1] != part.prev_last):
        raise AlreadyExists(
            f"the target holds {len(digests)} {what} of workspace {ws}; this export continues"
            f" a history of {before} {what} that is not the target's: import that first"
        )
    rest = digests[before:]
    if len(rest) > len(lines) or any(
        d != line.digest for d, line in zip(rest, lines, strict=False)
    ):
        raise AlreadyExists(
            f"workspace {ws} already has other {what} in the target than this export's"
            f" (it holds {len(digests)}): an import does not merge two histories"
        )
    return len(rest)


def _theirs(subject: str) -> bool:
    """Messages of the target's own on the workspace's subjects: its audit checkpoints."""
    parts = subject.split(".")
    return len(parts) == 5 and parts[3] == subjects.AUDIT_KIND


async def _found(store: EventStore, space: str, line: Line, after: int) -> int:
    """Where the target stored ``line``, the first of the workspace's messages after
    ``after`` besides the target's own checkpoints (another import of the same export, or a
    first answer lost and the retry refused by the CAS); ``ConcurrencyConflict`` when that
    is another message."""
    got, _ = await store.batch(space, after + 1, limit=16)
    for m in got:
        if _theirs(m.subject):
            continue
        if event_digest(m.subject, m.msg_id, m.data) == line.digest:
            return m.seq
        break
    raise ConcurrencyConflict(
        f"the workspace's history in the target changed during the import at {line.subject}:"
        " run it again (it goes on after what is stored, or refuses a history not this one)"
    )


async def _publish(store: EventStore, space: str, lines: list[Line], held: list[Stored]) -> None:
    """``lines`` in order, each with its ``Nats-Msg-Id`` and a CAS on the last of all the
    workspace's messages (``space``: its subjects) in the target, so the export's order is
    the target's, even against another import of the same export at the same time; the
    target's own checkpoints may come in between."""
    last = held[-1].seq if held else 0
    for line in lines:
        try:
            done = await store.publish(
                line.subject,
                bytes(line.data),
                msg_id=line.msg_id,
                expected_seq=last,
                expected_subject=space,
            )
        except ConcurrencyConflict:
            last = await _found(store, space, line, last)
            continue
        if done.duplicate:  # its msg id stored already (R3: checked before the CAS)
            done = done._replace(seq=await _found(store, space, line, last))
        last = done.seq


def _copy_hashed(src: Path, dest: Path) -> str:
    sha = hashlib.sha256()
    with open(src, "rb") as f, open(dest, "wb") as out:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            out.write(chunk)
    return "sha256:" + sha.hexdigest()


async def _store_artifacts(loaded: Loaded, blobs: BlobStore | None) -> tuple[int, int]:
    entries = loaded.manifest.artifacts or []
    if entries and blobs is None:
        raise InvalidInput("the export holds artifacts and no artifact store was given")
    paths = [(entry, _check_artifact(loaded, entry)) for entry in entries]
    stored = present = 0
    for entry, path in paths:
        assert blobs is not None
        with tempfile.TemporaryDirectory(prefix="cairn-import-") as tmp:
            # the store copies from a file of ours: what was checked is what it gets
            staged = Path(tmp) / "blob"
            if _copy_hashed(path, staged) != entry.digest:
                raise InvalidInput(f"the export is refused: {entry.file} changed while read")
            if await blobs.put_file(entry.digest, staged):
                stored += 1
            else:
                present += 1
    return stored, present


async def import_workspace(
    conn: Connection,
    root: Path,
    *,
    blobs: BlobStore | None = None,
    public: Ed25519PublicKey | None = None,
) -> Imported:
    """Check the export in ``root`` whole, check the target's history of its workspace, then
    store the export's blobs, events and metric batches (module docstring)."""
    loaded, signed = verify_export(root, public)
    ws = loaded.manifest.workspace
    events_store = EventStore(conn, stream=EVENTS.name)
    metrics_store = EventStore(conn, stream=METRICS.name)
    events_space, metrics_space = subjects.events_of_workspace(ws), f"cairn.metrics.{ws}.>"
    stored_events = await _stored(conn, EVENTS.name, events_space)
    held_events = [m for m in stored_events if not _theirs(m.subject)]
    held_metrics = await _stored(conn, METRICS.name, metrics_space)
    have_events = _todo("events", ws, loaded.manifest.events, loaded.events, held_events)
    have_metrics = _todo(
        "metric batches", ws, loaded.manifest.metrics, loaded.metrics, held_metrics
    )
    stored, present = await _store_artifacts(loaded, blobs)
    await _publish(events_store, events_space, loaded.events[have_events:], stored_events)
    await _publish(metrics_store, metrics_space, loaded.metrics[have_metrics:], held_metrics)
    return Imported(
        workspace=ws,
        events=len(loaded.events) - have_events,
        events_present=have_events,
        metrics=len(loaded.metrics) - have_metrics,
        metrics_present=have_metrics,
        artifacts=stored,
        artifacts_present=present,
        chain=loaded.manifest.events.chain,
        signed=signed,
    )
