"""The export format, pure: one folder per workspace export (docs/design.md, *Export and
import*)::

    manifest.json       what the export holds, its chain's ends and its files' hashes
    events.jsonl        the workspace's events (EVENTS), oldest first, one JSON object a line
    metrics.jsonl       its runs' metric batches (METRICS), oldest first
    checkpoints.jsonl   the audit service's signed checkpoints of the workspace's chain
    artifacts/<hex>     with ``--artifacts``: each blob the events name, by its SHA-256

A line is ``{"seq", "subject", "msg_id", "digest", "chain", "data"}``: the stream sequence
where the message was stored, its subject and ``Nats-Msg-Id``, its audit digest
(:func:`cairn.audit.event_digest`), for an event the workspace's chain hash after it
(:func:`cairn.audit.chain_step`: the same chain the audit service signs), and its stored bytes,
unchanged, as the JSON value they are.

Written ``--format parquet`` (the manifest's ``encoding``), each part is a Parquet file
instead (``events.parquet``, ``metrics.parquet``, ``checkpoints.parquet``) with the same
columns, ``data`` as binary (:mod:`cairn.portable._parquet`); everything else is the same.

:func:`load_export` reads a folder and refuses it, naming the line, unless every line is whole
and well-formed, every digest and chain hash is recomputed equal, the chain ends where the
manifest says, and every file is the one the manifest hashed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cairn.audit import (
    GENESIS,
    chain_step,
    compare_window,
    event_digest,
    key_id_of,
    split_subject,
    verify_signature,
)
from cairn.errors import InvalidInput, UnknownMessageType
from cairn.proto import subjects
from cairn.proto.assets import ASSET_KINDS
from cairn.proto.events import (
    EVENT_TYPES,
    ChainCheckpointed,
    ChainEntry,
    Envelope,
    decode_envelope,
)
from cairn.proto.metrics import MetricsLogged
from cairn.proto.streams import EVENTS, METRICS, STREAMS

__all__ = [
    "ARTIFACTS_DIR",
    "CHECKPOINTS_FILE",
    "ENCODINGS",
    "EVENTS_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "METRICS_FILE",
    "ArtifactEntry",
    "EventsPart",
    "Line",
    "Loaded",
    "Manifest",
    "Part",
    "artifact_file",
    "blob_refs",
    "check_checkpoints",
    "data_limit",
    "encoding_of",
    "iter_lines",
    "load_export",
    "part_file",
]

FORMAT = "cairn-export"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_FILE = "checkpoints.jsonl"
ARTIFACTS_DIR = "artifacts"
#: how the parts are written: JSON lines (the default, and what an export without an
#: ``encoding`` in its manifest holds) or Parquet files
ENCODINGS = ("jsonl", "parquet")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: the longest ``Nats-Msg-Id`` an export carries; every id Cairn makes is far shorter
MAX_MSG_ID = 256
#: room left in a stored message for its headers (as :class:`cairn.bus.EventStore` keeps)
_HEADER_ALLOWANCE = 512
#: a hex SHA-256, as digests, chain hashes and file hashes are written
Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
#: a ``Nats-Msg-Id`` as the server keeps it: visible ASCII, no white space (the client strips
#: white space from header values, so an id with it would be stored as another id)
MsgId = Annotated[str, msgspec.Meta(pattern="^[!-~]+$", max_length=MAX_MSG_ID)]
#: the same, or "" where there is none
Hex64OrNone = Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{64})?$")]
Count = Annotated[int, msgspec.Meta(ge=0)]
Seq = Annotated[int, msgspec.Meta(ge=1)]
#: the fields of an event's data that name a blob of the artifact store
_BLOB_FIELDS = frozenset({"digest", "blob", "snapshot"})


class Line(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One stored message: where it was, what it is, and its bytes as the JSON they are."""

    seq: Seq
    subject: str
    msg_id: MsgId
    digest: Hex64
    #: the workspace's chain hash after this event (events only; "" elsewhere)
    chain: Hex64OrNone = ""
    data: msgspec.Raw


class Part(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One file of lines: how many, what came before them (``--since``), the file's SHA-256."""

    count: Count
    #: messages of the workspace stored before the first line (an export ``--since``)
    prev_count: Count = 0
    #: the digest of the last of those ("" when none)
    prev_last: Hex64OrNone = ""
    sha256: Hex64


class EventsPart(Part, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The events file, with its chain's ends: the hash before the first line and after the
    last."""

    prev_chain: Hex64 = GENESIS
    chain: Hex64 = GENESIS


class ArtifactEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    digest: str
    size: int
    #: always ``artifacts/<hex of digest>``; anything else is refused
    file: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: str
    format_version: int
    workspace: str
    exported_at: str
    #: only what was stored after this time (ISO 8601), or everything (None)
    since: str | None = None
    events: EventsPart
    metrics: Part
    checkpoints: Part
    #: the source's audit public key (hex) the checkpoints were signed with ("" when none)
    audit_key: str = ""
    #: the schema version of every event type of the exporting Cairn
    schema_versions: dict[str, int]
    #: the blobs written (None: exported without ``--artifacts``)
    artifacts: list[ArtifactEntry] | None = None
    #: blobs the events name that the artifact store did not hold
    missing_artifacts: list[str] = []
    #: how the parts are written (:data:`ENCODINGS`); left out for JSON lines, so that such
    #: a manifest is the one a Cairn without Parquet writes and reads
    encoding: str | msgspec.UnsetType = msgspec.UNSET


class Loaded(NamedTuple):
    """An export read and checked: its manifest and its lines (without their data when
    loaded with ``data=False``: :func:`iter_lines` reads them again)."""

    root: Path
    manifest: Manifest
    events: list[Line]
    metrics: list[Line]
    checkpoints: list[Line]
    #: each event's type, in order
    types: list[str]
    #: the most bytes of data one event line and one metric batch line holds
    largest: tuple[int, int]


_manifest_decoder = msgspec.json.Decoder(Manifest)
_line_decoder = msgspec.json.Decoder(Line)
_raw_envelope = msgspec.json.Decoder(Envelope[msgspec.Raw])


def encoding_of(manifest: Manifest) -> str:
    """How an export's parts are written: ``jsonl`` or ``parquet``."""
    return "jsonl" if manifest.encoding is msgspec.UNSET else manifest.encoding


def part_file(file: str, encoding: str) -> str:
    """The file a part (named by its JSON lines file: :data:`EVENTS_FILE` ...) is written to
    in ``encoding``; ``InvalidInput`` names an encoding this Cairn does not write."""
    if encoding not in ENCODINGS:
        raise InvalidInput(f"no export format {encoding!r}: one of {', '.join(ENCODINGS)}")
    return file if encoding == "jsonl" else file.removesuffix(".jsonl") + ".parquet"


def artifact_file(digest: str) -> str:
    """Where a blob lies in an export: ``artifacts/<hex>``."""
    return f"{ARTIFACTS_DIR}/{digest.removeprefix('sha256:')}"


def blob_refs(value: Any, found: dict[str, None]) -> None:
    """Add to ``found`` (in order, once each) every blob an event's data names: the values of
    its ``digest``, ``blob`` and ``snapshot`` fields that are ``sha256:<hex>``, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _BLOB_FIELDS and isinstance(item, str) and _DIGEST.fullmatch(item):
                found[item] = None
            else:
                blob_refs(item, found)
    elif isinstance(value, list):
        for item in value:
            blob_refs(item, found)


def _refuse(file: str, number: int, what: str) -> InvalidInput:
    unit = "row" if file.endswith(".parquet") else "line"
    return InvalidInput(f"the export is refused: {file} {unit} {number}: {what}")


def data_limit(stream: str) -> int:
    """The most bytes one line's data may hold to be stored in ``stream`` again (its largest
    message, less room for headers); the target's server may allow less (checked there)."""
    size = next(d.max_msg_size for d in STREAMS if d.name == stream)
    return size - _HEADER_ALLOWANCE


#: a line's bytes besides its data: seq, subject, msg id, digest, chain and JSON punctuation
_LINE_OVERHEAD = 2048


def _lines(
    root: Path, file: str, part: Part, stream: str, sha: Any, encoding: str = "jsonl"
) -> Iterator[tuple[int, Line]]:
    """The lines of one part (``file``: its JSON lines name) in ``encoding``, each whole and
    well-formed and small enough to be stored in ``stream``, as many as the manifest counts;
    ``sha`` hashes the file as it is read."""
    if encoding == "parquet":
        return _parquet_lines(root, part_file(file, encoding), part, stream, sha)
    return _json_lines(root, file, part, stream, sha)


def _json_lines(
    root: Path, file: str, part: Part, stream: str, sha: Any
) -> Iterator[tuple[int, Line]]:
    """Read a line at a time, none longer than the stream could store and no more than the
    manifest counts, so a hostile file cannot make the reader hold more than the export it
    claims to be."""
    limit = data_limit(stream)
    number = 0
    last: Line | None = None
    try:
        with open(root / file, "rb") as f:
            while text := f.readline(limit + _LINE_OVERHEAD + 1):
                number += 1
                sha.update(text)
                if not text.endswith(b"\n"):
                    if len(text) > limit + _LINE_OVERHEAD:
                        raise _refuse(file, number, f"longer than {stream} could store")
                    raise _refuse(file, number, "truncated (no end of line)")
                if number > part.count:
                    raise _refuse(file, number, f"more lines than the manifest's {part.count}")
                try:
                    line = _line_decoder.decode(text)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise _refuse(file, number, f"malformed: {exc}") from exc
                last = _line(file, number, line, limit, stream, last)
                yield number, last
    except OSError as exc:
        raise InvalidInput(f"the export is refused: cannot read {file}: {exc}") from exc
    if number != part.count:
        raise InvalidInput(
            f"the export is refused: {file} holds {number} lines, the manifest counts"
            f" {part.count} (truncated?)"
        )


class _Head(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A Parquet row's fields besides its data, checked as a line's are."""

    seq: Seq
    subject: str
    msg_id: MsgId
    digest: Hex64
    chain: Hex64OrNone = ""


def _parquet_lines(
    root: Path, file: str, part: Part, stream: str, sha: Any
) -> Iterator[tuple[int, Line]]:
    """The file is hashed whole first, then its rows are read from the same open file a
    batch at a time (:func:`cairn.portable._parquet.read_rows` bounds what one holds)."""
    from cairn.portable._parquet import read_rows

    limit = data_limit(stream)
    last: Line | None = None
    try:
        with open(root / file, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
            f.seek(0)
            rows = read_rows(f, file, part.count, limit + _LINE_OVERHEAD)
            for number, (seq, subject, msg_id, digest, chain, data) in enumerate(rows, start=1):
                try:
                    head = msgspec.convert(
                        {
                            "seq": seq,
                            "subject": subject,
                            "msg_id": msg_id,
                            "digest": digest,
                            "chain": chain,
                        },
                        _Head,
                    )
                except msgspec.ValidationError as exc:
                    raise _refuse(file, number, f"malformed: {exc}") from exc
                if len(data) > limit:
                    raise _refuse(file, number, f"longer than {stream} could store")
                line = Line(
                    seq=head.seq,
                    subject=head.subject,
                    msg_id=head.msg_id,
                    digest=head.digest,
                    chain=head.chain,
                    data=msgspec.Raw(data),
                )
                last = _line(file, number, line, limit, stream, last)
                yield number, last
    except OSError as exc:
        raise InvalidInput(f"the export is refused: cannot read {file}: {exc}") from exc


_NO_DATA = msgspec.Raw(b"null")


def _read_lines(
    root: Path,
    file: str,
    part: Part,
    stream: str,
    check: Callable[[int, Line], None] | None = None,
    data: bool = True,
    encoding: str = "jsonl",
) -> tuple[list[Line], str, int]:
    """The lines of one file (:func:`_lines`), each checked by ``check``, kept with their data
    or without; the file's SHA-256; the most bytes of data one line holds."""
    sha = hashlib.sha256()
    lines: list[Line] = []
    largest = 0
    for number, line in _lines(root, file, part, stream, sha, encoding):
        if check is not None:
            check(number, line)
        largest = max(largest, len(line.data))
        lines.append(line if data else msgspec.structs.replace(line, data=_NO_DATA))
    return lines, sha.hexdigest(), largest


def iter_lines(loaded: Loaded, file: str) -> Iterator[Line]:
    """The lines of one file of an export loaded before, read again with their data, each
    checked as when loaded besides what needs the whole file, and the file's hash at the end
    (what the loaded lines' digests stand for is what the caller compares)."""
    part, stream = {
        EVENTS_FILE: (loaded.manifest.events, EVENTS.name),
        METRICS_FILE: (loaded.manifest.metrics, METRICS.name),
    }[file]
    encoding = encoding_of(loaded.manifest)
    sha = hashlib.sha256()
    for _, line in _lines(loaded.root, file, part, stream, sha, encoding):
        yield line
    _check_hash(part_file(file, encoding), part, sha.hexdigest())


def _line(file: str, number: int, line: Line, limit: int, stream: str, before: Line | None) -> Line:
    try:
        msgspec.json.decode(line.data)  # the data is one whole JSON value
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _refuse(file, number, f"malformed: {exc}") from exc
    if len(line.data) > limit:
        raise _refuse(
            file, number, f"{len(line.data)} bytes of data exceed {stream}'s limit of {limit}"
        )
    if event_digest(line.subject, line.msg_id, bytes(line.data)) != line.digest:
        raise _refuse(file, number, f"seq {line.seq} {line.subject}: digest does not verify")
    if before is not None and line.seq <= before.seq:
        raise _refuse(file, number, f"seq {line.seq} does not follow seq {before.seq}")
    return line


def _check_hash(file: str, part: Part, sha256: str) -> None:
    """Last, once the lines are checked (they name what is wrong more precisely)."""
    if sha256 != part.sha256:
        raise InvalidInput(f"the export is refused: {file} is not the file the manifest hashed")


def _check_event(ws: str, file: str, number: int, line: Line) -> str:
    """An event line's envelope: of this workspace, on its aggregate's subject, of a type and
    version this Cairn reads (upcast and decoded whole), of its type's aggregate kind, and not
    the audit service's (a target's checkpoints are its own, signed with its key)."""
    try:
        env = decode_envelope(bytes(line.data))
    except UnknownMessageType as exc:
        raise _refuse(file, number, f"{exc}: upgrade this Cairn first") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _refuse(file, number, f"not an event this Cairn reads: {exc}") from exc
    try:
        subject = subjects.event(env.workspace, env.aggregate_kind, env.aggregate_id)
    except InvalidInput as exc:
        raise _refuse(file, number, str(exc)) from exc
    if env.workspace != ws or line.subject != subject:
        raise _refuse(file, number, f"{line.subject} is not an event of workspace {ws}")
    kind = EVENT_TYPES[env.type].KIND
    if env.aggregate_kind == subjects.AUDIT_KIND or kind == subjects.AUDIT_KIND:
        raise _refuse(file, number, "an audit checkpoint among the events")
    if env.aggregate_kind not in _KINDS_OF.get(kind, (kind,)):
        raise _refuse(
            file, number, f"{env.type} is an event of a {kind}, not of {env.aggregate_kind}"
        )
    return env.type


def _check_chain(manifest: Manifest, events: list[Line], file: str) -> None:
    chain = manifest.events.prev_chain
    for number, line in enumerate(events, start=1):
        chain = chain_step(chain, line.seq, line.digest)
        if line.chain != chain:
            raise _refuse(file, number, f"seq {line.seq} {line.subject}: the chain does not verify")
    if chain != manifest.events.chain:
        raise InvalidInput(
            "the export is refused: its chain ends at another hash than the manifest's"
        )


_metrics_decoder = msgspec.json.Decoder(MetricsLogged)
#: the aggregate kinds whose subjects hold events of a type's ``KIND``, where they are more
#: than that kind itself: asset events live on the aggregate of each asset kind
#: (cairn.domain.asset.AGGREGATES), and a staging area is folded as a run
#: (cairn.domain.run.STAGING)
_KINDS_OF: dict[str, tuple[str, ...]] = {
    "asset": ASSET_KINDS,
    "run": ("run", "staging"),
}


def _check_metric(ws: str, file: str, number: int, line: Line) -> None:
    """A metric batch on its run's subject of this workspace, and naming that workspace and
    run itself (the ingester and the read models go by the batch's own fields)."""
    parts = line.subject.split(".")
    try:
        subject = subjects.metrics(ws, parts[3]) if len(parts) == 4 else ""
    except InvalidInput as exc:
        raise _refuse(file, number, str(exc)) from exc
    if line.subject != subject:
        raise _refuse(file, number, f"{line.subject} is not a run's of {ws}")
    try:
        batch = _metrics_decoder.decode(line.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _refuse(file, number, f"not a metric batch: {exc}") from exc
    if batch.workspace != ws or batch.run_id != parts[3]:
        raise _refuse(
            file, number, f"a batch of {batch.workspace}/{batch.run_id} on {line.subject}"
        )


def _check_manifest(manifest: Manifest) -> None:
    if manifest.format != FORMAT or manifest.format_version != FORMAT_VERSION:
        raise InvalidInput(
            f"the export is refused: format {manifest.format!r} v{manifest.format_version};"
            f" this Cairn reads {FORMAT!r} v{FORMAT_VERSION}"
        )
    if encoding_of(manifest) not in ENCODINGS:
        raise InvalidInput(
            f"the export is refused: its parts are written as {encoding_of(manifest)!r};"
            f" this Cairn reads {', '.join(ENCODINGS)}"
        )
    subjects.validate_token(manifest.workspace, "workspace")
    newer = sorted(
        f"{name} v{version}"
        for name, version in manifest.schema_versions.items()
        if name not in EVENT_TYPES or version > EVENT_TYPES[name].VERSION
    )
    if newer:
        raise InvalidInput(
            "the export is refused: it was written by a Cairn with event types or versions"
            f" this one does not read ({', '.join(newer[:5])}): upgrade this Cairn first"
        )
    for entry in manifest.artifacts or []:
        if not _DIGEST.fullmatch(entry.digest) or entry.file != artifact_file(entry.digest):
            raise InvalidInput(
                f"the export is refused: artifact {entry.file!r} is not named"
                f" {ARTIFACTS_DIR}/<the hex of its digest> ({entry.digest!r})"
            )
        if entry.size < 0:
            raise InvalidInput(f"the export is refused: artifact {entry.file} has a negative size")


def load_export(root: Path, *, data: bool = True) -> Loaded:
    """Read and check the export in ``root`` (module docstring); ``InvalidInput`` names what
    is wrong. With ``data=False`` the event and metric lines are kept without their data (an
    import reads them again as it stores them: :func:`iter_lines`)."""
    try:
        manifest = _manifest_decoder.decode((root / MANIFEST_FILE).read_bytes())
    except OSError as exc:
        raise InvalidInput(f"{root} holds no export ({MANIFEST_FILE}: {exc})") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidInput(f"the export is refused: {MANIFEST_FILE} is malformed: {exc}") from exc
    _check_manifest(manifest)
    ws = manifest.workspace
    encoding = encoding_of(manifest)
    events_file, metrics_file, checkpoints_file = (
        part_file(name, encoding) for name in (EVENTS_FILE, METRICS_FILE, CHECKPOINTS_FILE)
    )
    types: list[str] = []
    events, sha, largest_event = _read_lines(
        root,
        EVENTS_FILE,
        manifest.events,
        EVENTS.name,
        lambda number, line: types.append(_check_event(ws, events_file, number, line)),
        data,
        encoding,
    )
    _check_chain(manifest, events, events_file)
    _check_hash(events_file, manifest.events, sha)
    metrics, sha, largest_metric = _read_lines(
        root,
        METRICS_FILE,
        manifest.metrics,
        METRICS.name,
        lambda number, line: _check_metric(ws, metrics_file, number, line),
        data,
        encoding,
    )
    _check_hash(metrics_file, manifest.metrics, sha)
    checkpoints, sha, _ = _read_lines(
        root, CHECKPOINTS_FILE, manifest.checkpoints, EVENTS.name, encoding=encoding
    )
    _check_hash(checkpoints_file, manifest.checkpoints, sha)
    return Loaded(
        root, manifest, events, metrics, checkpoints, types, (largest_event, largest_metric)
    )


def _signed_ok(public: Ed25519PublicKey, cp: ChainCheckpointed) -> bool:
    return cp.key_id == key_id_of(public) and verify_signature(public, cp)


def check_checkpoints(loaded: Loaded, public: Ed25519PublicKey | None) -> int:
    """Check the export's signed checkpoints against its events: each of this workspace,
    numbered upwards without repeats, signed by ``public``, and listing exactly the events the
    export holds in its window, its chain hash the one recomputed there. Returns how many
    distinct events checkpoints verified with ``public`` cover: 0 when no key is given (the
    windows are still compared; nothing is vouched for)."""
    ws = loaded.manifest.workspace
    encoding = encoding_of(loaded.manifest)
    events_file, file = part_file(EVENTS_FILE, encoding), part_file(CHECKPOINTS_FILE, encoding)
    chain_at = {line.seq: line.chain for line in loaded.events}
    entries: list[ChainEntry] = []
    for line in loaded.events:
        split = split_subject(line.subject)
        if split is None:  # _check_event refuses these; never count what is not an event
            raise _refuse(events_file, len(entries) + 1, f"{line.subject} is not an event")
        entries.append(ChainEntry(seq=line.seq, digest=line.digest, subject=split[1]))
    first = loaded.events[0].seq if loaded.events else 0
    covered: set[int] = set()
    last_index = -1
    for number, line in enumerate(loaded.checkpoints, start=1):
        try:
            cp = msgspec.json.decode(line.data, type=Envelope[ChainCheckpointed]).data
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise _refuse(file, number, f"not a checkpoint: {exc}") from exc
        if cp.workspace != ws or line.subject != subjects.audit_chain(ws):
            raise _refuse(file, number, f"a checkpoint of {cp.workspace}")
        if cp.index <= last_index:
            raise _refuse(file, number, f"checkpoint {cp.index} does not follow {last_index}")
        last_index = cp.index
        if public is not None and not _signed_ok(public, cp):
            raise _refuse(file, number, f"checkpoint {cp.index} is not signed by the key trusted")
        if cp.from_seq < first:
            continue  # its window starts before the export (--since): not all of it is here
        window = [e for e in entries if cp.from_seq <= e.seq <= cp.up_to_seq]
        finding = compare_window(ws, cp.events, window)
        if finding is not None or chain_at.get(cp.up_to_seq) != cp.chain:
            what = "its chain hash differs" if finding is None else finding.detail
            raise _refuse(
                file,
                number,
                f"checkpoint {cp.index} disagrees with the events at seq"
                f" {cp.from_seq}-{cp.up_to_seq}: {what}",
            )
        if public is not None:
            covered.update(e.seq for e in window)
    return len(covered)
