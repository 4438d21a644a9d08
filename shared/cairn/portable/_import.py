"""``cairn import``: an export (:mod:`cairn.portable._format`) into another home or cluster,
checked whole before anything is written, then its blobs, its events and its metric batches
stored in the export's order with their bytes and ``Nats-Msg-Id`` unchanged.

An import picks up where the target's history of the workspace ends: the target must hold
exactly what came before the export (nothing, for an export of everything) and, after that,
nothing but a first part of the export itself (an import repeated or cut short); anything
else is another history, and refused. So an import repeated is a no-op, and one cut short
finishes when run again (docs/design.md, *Export and import*).

An import is exclusive: it refuses a target whose services are running (a durable consumer of
EVENTS or METRICS with a pull waiting or a push subscriber bound), since process managers and
webhooks there would act on the imported history while it is stored, and write into the
workspace. The target's audit checkpoints, written between imported events by an audit service
that is running regardless, are passed over: the import moves its expected sequence past them
and tries again. Once stored, the workspace is read back and compared with the export line by
line."""

from __future__ import annotations

import asyncio
import hashlib
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cairn.audit import event_digest, key_id_of, parse_public_key
from cairn.bus import Connection, EventStore, Stored
from cairn.errors import AlreadyExists, ConcurrencyConflict, InvalidInput, Unavailable
from cairn.portable._export import _stored
from cairn.portable._format import (
    EVENTS_FILE,
    METRICS_FILE,
    ArtifactEntry,
    Line,
    Loaded,
    Part,
    check_checkpoints,
    iter_lines,
    load_export,
)
from cairn.proto import subjects
from cairn.proto.streams import EVENTS, METRICS
from cairn.storage import BlobStore

__all__ = [
    "MEMBER_EVENTS",
    "Imported",
    "Members",
    "import_workspace",
    "refuse_unsigned",
    "verify_export",
]

_CHUNK = 1 << 20
#: tries of one line against the target's own checkpoints and a cluster's "in process" answers
_ATTEMPTS = 20
#: looks at the target's consumers, this far apart, before an import is let in
_LIVE_LOOKS = 3
_LIVE_GAP_S = 0.2
#: the events that grant or change a user's roles in the workspace, by user name
MEMBER_EVENTS = frozenset({"MemberAdded", "MemberRolesChanged", "MemberRemoved"})
Members = Literal["keep", "drop"]


def _members_chosen(loaded: Loaded, members: Members | None) -> list[Line]:
    """The export's events to store: all of them (``keep``), or all but its member events
    (``drop``); an export with member events and no choice is refused, since they grant roles
    in the target to whoever has the same user name there (docs/security.md)."""
    held = [line for line, t in zip(loaded.events, loaded.types, strict=True) if t in MEMBER_EVENTS]
    if not held or members == "keep":
        return loaded.events
    if members is None:
        raise InvalidInput(
            f"the export holds {len(held)} membership event(s) of workspace"
            f" {loaded.manifest.workspace}, which grant roles by user name: say --members keep"
            " (the same users exist here and are the same people) or --members drop"
        )
    if loaded.manifest.events.prev_count:
        raise InvalidInput(
            "--members drop takes an export of a whole history: an export --since continues"
            " one whose member events this import cannot tell apart"
        )
    return [
        line for line, t in zip(loaded.events, loaded.types, strict=True) if t not in MEMBER_EVENTS
    ]


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
    #: the export's chain hash after its last event, and how many events checkpoints of the
    #: source, verified with a key, cover (0: no key was used)
    chain: str
    signed: int
    #: membership events of the export left out (``--members drop``)
    members_dropped: int = 0
    #: the id of the audit key the checkpoints were checked with ("none": no key)
    key: str = "none"


def verify_export(
    root: Path,
    public: Ed25519PublicKey | None = None,
    *,
    trust_export_key: bool = False,
    data: bool = True,
) -> tuple[Loaded, int]:
    """Read and check an export (its lines, digests, chain, files), and its checkpoints
    against ``public`` or, with ``trust_export_key``, against the key the export names (which
    vouches only for an export that was not rewritten whole); the export and how many of its
    events checkpoints verified with a key cover (0 when no key was used). ``data=False``:
    the lines are kept without their data (:func:`cairn.portable._format.load_export`)."""
    loaded = load_export(root, data=data)
    named = None
    if loaded.manifest.audit_key:
        named = parse_public_key(loaded.manifest.audit_key, "the export's audit key")
    if public is not None and named is not None and key_id_of(named) != key_id_of(public):
        raise InvalidInput(
            f"the export is refused: its checkpoints are signed by {key_id_of(named)},"
            f" not by the key trusted ({key_id_of(public)})"
        )
    key = public if public is not None else (named if trust_export_key else None)
    return loaded, check_checkpoints(loaded, key)


def refuse_unsigned(loaded: Loaded, signed: int) -> None:
    """Refuse an export whose events are not all covered by verified checkpoints."""
    if signed < len(loaded.events):
        raise InvalidInput(
            f"the export is refused: {len(loaded.events) - signed} of its {len(loaded.events)}"
            " events are in no checkpoint of the source verified with the key given (export"
            " again once the source's audit service signed them, or allow the unsigned tail)"
        )


def _key_used(loaded: Loaded, public: Ed25519PublicKey | None, trust_export_key: bool) -> str:
    if public is not None:
        return str(key_id_of(public))
    if trust_export_key and loaded.manifest.audit_key:
        return str(key_id_of(parse_public_key(loaded.manifest.audit_key, "the export's key")))
    return "none"


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


async def _after(store: EventStore, space: str, line: Line, last: int) -> tuple[int | None, int]:
    """What the target stored on the workspace's subjects after ``last``: where it stored
    ``line`` (another import of the same export, or a first answer lost and the retry refused
    by the CAS) and the sequence to expect from now, or None and the last of the target's own
    checkpoints that came in between; ``ConcurrencyConflict`` when another message is there."""
    while True:
        got, _ = await store.batch(space, last + 1, limit=16)
        for m in got:
            if not _theirs(m.subject):
                if event_digest(m.subject, m.msg_id, m.data) == line.digest:
                    return m.seq, m.seq
                raise ConcurrencyConflict(
                    f"the workspace's history in the target changed during the import at"
                    f" {line.subject} ({m.subject} seq {m.seq} is not the export's): run it"
                    " again (it goes on after what is stored, or refuses a history not this one)"
                )
            last = m.seq
        if not got:
            return None, last


async def _publish_one(store: EventStore, space: str, line: Line, last: int) -> int:
    """Store ``line`` after the workspace's message ``last``; where it was stored."""
    for attempt in range(_ATTEMPTS):
        try:
            done = await store.publish(
                line.subject,
                bytes(line.data),
                msg_id=line.msg_id,
                expected_seq=last,
                expected_subject=space,
            )
        except ConcurrencyConflict:
            stored, moved = await _after(store, space, line, last)
            if stored is not None:
                return stored
            if moved == last:  # nothing new: a cluster's "in process" answer; try again
                await asyncio.sleep(0.05 * (attempt + 1))
            last = moved
            continue
        if not done.duplicate:
            return done.seq
        # its msg id stored already (R3: checked before the CAS): it must be right here
        stored, _ = await _after(store, space, line, last)
        if stored is None:
            raise ConcurrencyConflict(
                f"the target holds {line.subject} msg id {line.msg_id} elsewhere than after"
                f" seq {last}: another history, not this export's"
            )
        return stored
    raise ConcurrencyConflict(
        f"the workspace's history in the target kept changing at {line.subject}: stop what"
        " writes to it and run the import again"
    )


async def _publish(
    store: EventStore, space: str, lines: Iterable[Line], held: list[Stored]
) -> None:
    """``lines`` in order, each with its ``Nats-Msg-Id`` and a CAS on the last of all the
    workspace's messages (``space``: its subjects) in the target, so the export's order is
    the target's, even against another import of the same export at the same time; the
    target's own checkpoints may come in between."""
    last = held[-1].seq if held else 0
    for line in lines:
        last = await _publish_one(store, space, line, last)


async def _refuse_live(conn: Connection) -> None:
    """Refuse a target whose services are running: a durable consumer of EVENTS or METRICS
    with a pull request waiting (a service's fetch loop) or a push subscriber bound, seen in
    any of a few looks."""
    for look in range(_LIVE_LOOKS):
        if look:
            await asyncio.sleep(_LIVE_GAP_S)
        for stream in (EVENTS.name, METRICS.name):
            for info in await conn.js.consumers_info(stream):
                if (info.num_waiting or 0) > 0 or info.push_bound:
                    raise Unavailable(
                        f"the target's services are running (consumer {info.name} of {stream}"
                        " is in use): stop them ('cairn up', or every 'cairn serve' but the audit"
                        " service) before an import, and start them again after it"
                    )


async def _read_back(conn: Connection, ws: str, events: list[Line], metrics: list[Line]) -> None:
    """The workspace as the target now holds it must be the export's, line for line, in
    order (besides the target's checkpoints): what a write that slipped in between would
    break."""
    for stream, space, lines in (
        (EVENTS.name, subjects.events_of_workspace(ws), events),
        (METRICS.name, f"cairn.metrics.{ws}.>", metrics),
    ):
        held = [m for m in await _stored(conn, stream, space) if not _theirs(m.subject)]
        digests = [event_digest(m.subject, m.msg_id, m.data) for m in held]
        tail = digests[len(digests) - len(lines) :] if lines else []
        if len(digests) < len(lines) or tail != [line.digest for line in lines]:
            raise ConcurrencyConflict(
                f"read back, workspace {ws}'s {stream} in the target is not the export's history"
                " in its order: something else wrote to it during the import"
            )


def _check_sizes(loaded: Loaded, events: EventStore, metrics: EventStore) -> None:
    """Every line fits the target's server before anything is stored."""
    for store, largest, what in (
        (events, loaded.largest[0], "event"),
        (metrics, loaded.largest[1], "metric batch"),
    ):
        if largest > store.max_bytes:
            raise InvalidInput(
                f"the export holds an {what} of {largest} bytes; this target stores at most"
                f" {store.max_bytes}"
            )


def _again(loaded: Loaded, file: str, chosen: list[Line]) -> Iterator[Line]:
    """The lines ``chosen`` (checked when the export was loaded, kept without their data)
    read again with their data, each the one checked (its digest covers its subject, id and
    bytes); ``InvalidInput`` when the file changed in between."""
    at = 0
    for line in iter_lines(loaded, file):
        if at < len(chosen) and line.seq == chosen[at].seq:
            if line.digest != chosen[at].digest:
                raise InvalidInput(f"the export's {file} changed while it was imported")
            yield line
            at += 1
    if at != len(chosen):
        raise InvalidInput(f"the export's {file} changed while it was imported")


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
    trust_export_key: bool = False,
    members: Members | None = None,
    require_signed: bool = False,
) -> Imported:
    """Check the export in ``root`` whole, check the target's history of its workspace and
    that its services are stopped, then store the export's blobs, events and metric batches
    and read them back (module docstring)."""
    loaded, signed = verify_export(root, public, trust_export_key=trust_export_key, data=False)
    if require_signed:
        refuse_unsigned(loaded, signed)
    ws = loaded.manifest.workspace
    lines = _members_chosen(loaded, members)
    events_store = EventStore(conn, stream=EVENTS.name)
    metrics_store = EventStore(conn, stream=METRICS.name)
    _check_sizes(loaded, events_store, metrics_store)
    await _refuse_live(conn)
    events_space, metrics_space = subjects.events_of_workspace(ws), f"cairn.metrics.{ws}.>"
    stored_events = await _stored(conn, EVENTS.name, events_space)
    held_events = [m for m in stored_events if not _theirs(m.subject)]
    held_metrics = await _stored(conn, METRICS.name, metrics_space)
    have_events = _todo("events", ws, loaded.manifest.events, lines, held_events)
    have_metrics = _todo(
        "metric batches", ws, loaded.manifest.metrics, loaded.metrics, held_metrics
    )
    stored, present = await _store_artifacts(loaded, blobs)
    todo_events = _again(loaded, EVENTS_FILE, lines[have_events:])
    await _publish(events_store, events_space, todo_events, stored_events)
    todo_metrics = _again(loaded, METRICS_FILE, loaded.metrics[have_metrics:])
    await _publish(metrics_store, metrics_space, todo_metrics, held_metrics)
    await _read_back(conn, ws, lines, loaded.metrics)
    return Imported(
        workspace=ws,
        events=len(lines) - have_events,
        events_present=have_events,
        metrics=len(loaded.metrics) - have_metrics,
        metrics_present=have_metrics,
        artifacts=stored,
        artifacts_present=present,
        chain=loaded.manifest.events.chain,
        signed=signed,
        members_dropped=len(loaded.events) - len(lines),
        key=_key_used(loaded, public, trust_export_key),
    )
