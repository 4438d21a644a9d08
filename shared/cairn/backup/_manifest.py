"""The backup folder's manifest, its typed errors, and the checks of a backup's files."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.bus import Connection
from cairn.errors import AlreadyExists, InvalidInput
from cairn.proto.streams import STREAMS
from cairn.storage import blob_key, digest_of_file

__all__ = [
    "FORMAT",
    "HEX_DIGEST",
    "MANIFEST",
    "STREAM_NAME",
    "ArtifactsEntry",
    "BackupDirNotEmpty",
    "BackupError",
    "ChecksumMismatch",
    "IndexRow",
    "Manifest",
    "ManifestMissing",
    "ReadModelEntry",
    "StreamEntry",
    "StreamNotEmpty",
    "indexed_blobs",
    "now",
    "read_manifest",
    "server_version",
    "sha256_of",
    "verify_files",
    "version",
]

MANIFEST = "manifest.json"
#: the manifest's format; a restore refuses any other
FORMAT = 1
#: the stream names a backup takes (and a manifest may name): they become file names
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class BackupError(InvalidInput):
    """A backup that cannot be taken or restored as it is."""


class ManifestMissing(BackupError):
    """The folder holds no (readable) manifest: no backup, or one that never finished."""


class ChecksumMismatch(BackupError):
    """A file of the backup is not the one the manifest describes."""

    def __init__(self, message: str, stream: str | None = None) -> None:
        super().__init__(message)
        self.stream = stream


class BackupDirNotEmpty(BackupError):
    """A backup is written into a new or empty folder only."""


class StreamNotEmpty(AlreadyExists):
    """The target already holds this stream with messages; restore replaces it only forced."""

    def __init__(self, message: str, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


class StreamEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One stream's snapshot: its file, checksum, configuration and the position it was
    taken at (the server's state when the snapshot began)."""

    name: str
    file: str
    sha256: str
    size: int
    first_seq: int
    last_seq: int
    messages: int
    config: dict[str, Any]
    state: dict[str, Any]
    taken_at: str


class IndexRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One blob of the artifact store's index (``artifacts/index.json``)."""

    digest: str
    size: int


class ArtifactsEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["local", "s3"]
    index: str
    sha256: str
    blobs: int
    size: int
    #: the blobs' files are in the backup (``artifacts/sha256/...``): the local store only
    copied: bool


class ReadModelEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stream: str
    last_seq: int
    hash: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: int
    cairn_version: str
    server_version: str
    created_at: str
    streams: tuple[StreamEntry, ...]
    #: streams of the account not in the backup (JOBS: derived from the log)
    skipped: tuple[str, ...] = ()
    artifacts: ArtifactsEntry | None = None
    read_models: dict[str, ReadModelEntry] = {}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def version() -> str:
    try:
        return metadata.version("cairn")
    except metadata.PackageNotFoundError:
        return "unknown"


def server_version(conn: Connection) -> str:
    v = conn.nc.connected_server_version
    return f"{v.major}.{v.minor}.{v.patch}"


def sha256_of(path: Path) -> str:
    return digest_of_file(path).removeprefix("sha256:")


def read_manifest(folder: Path) -> Manifest:
    """The backup's manifest, checked for shape and for file names that stay in ``folder``."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ManifestMissing(f"{folder} is not a folder: no backup there")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestMissing(
            f"{path} is missing: {folder} holds no backup, or one that never finished"
            " (the manifest is written last)"
        ) from None
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.ValidationError as exc:
        raise BackupError(f"{path} is not a backup manifest: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BackupError(f"{path} is not JSON: {exc}") from exc
    if manifest.format != FORMAT:
        raise BackupError(f"{path}: format {manifest.format}, this version reads {FORMAT}")
    names = [entry.name for entry in manifest.streams]
    if len(set(names)) != len(names):
        raise BackupError(f"{path}: a stream is named twice in {names}")
    for entry in manifest.streams:
        if not STREAM_NAME.fullmatch(entry.name) or entry.file != f"streams/{entry.name}.tar.s2":
            raise BackupError(f"{path}: stream entry {entry.name!r} names file {entry.file!r}")
        _check_config(path, entry)
    if manifest.artifacts is not None and manifest.artifacts.index != "artifacts/index.json":
        raise BackupError(f"{path}: the artifact index is {manifest.artifacts.index!r}")
    return manifest


#: what a stream restored from a backup may not have: it would copy or move messages elsewhere
_FOREIGN = ("mirror", "sources", "republish", "subject_transform")
#: what Cairn's own streams are made with and a restore must keep (their immutability)
_KEPT = ("subjects", "retention", "deny_delete", "deny_purge", "allow_rollup_hdrs")
_KNOWN = {c.name: msgspec.to_builtins(c) for c in STREAMS}


def _check_config(path: Path, entry: StreamEntry) -> None:
    """The configuration a stream is restored with is the stream's: its own name, nothing
    copied in from or out to another stream, and for Cairn's streams the subjects, retention
    and immutability they are made with (the manifest is not signed: an edited one must not
    make EVENTS deletable)."""
    config = entry.config
    if config.get("name") != entry.name:
        raise BackupError(f"{path}: stream {entry.name}'s configuration names another")
    if foreign := [k for k in _FOREIGN if config.get(k)]:
        raise BackupError(f"{path}: stream {entry.name}'s configuration sets {foreign}")
    known = _KNOWN.get(entry.name)
    if known is None:
        return
    for key in _KEPT:
        want, got = known.get(key) or False, config.get(key) or False
        if isinstance(want, tuple):  # subjects: a list in JSON
            want = list(want)
        if got != want:
            raise BackupError(
                f"{path}: stream {entry.name} with {key} {got!r}; Cairn makes it with {want!r}"
            )


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest names is there with its size and SHA-256, and every copied
    blob hashes to its name; else ``ChecksumMismatch`` naming the stream or the file."""
    for entry in manifest.streams:
        path = folder / entry.file
        if not path.is_file():
            raise ChecksumMismatch(f"stream {entry.name}: {path} is missing", entry.name)
        size, digest = path.stat().st_size, sha256_of(path)
        if size != entry.size or digest != entry.sha256:
            raise ChecksumMismatch(
                f"stream {entry.name}: {path} does not match the manifest (sha256 {digest},"
                f" {size} bytes; recorded {entry.sha256}, {entry.size} bytes)",
                entry.name,
            )
    for digest, path in indexed_blobs(folder, manifest):
        if manifest.artifacts is not None and manifest.artifacts.copied:
            if not path.is_file() or "sha256:" + sha256_of(path) != digest:
                raise ChecksumMismatch(f"artifact {digest}: {path} is missing or changed")


def indexed_blobs(folder: Path, manifest: Manifest) -> list[tuple[str, Path]]:
    entry = manifest.artifacts
    if entry is None:
        return []
    index = folder / entry.index
    if not index.is_file() or sha256_of(index) != entry.sha256:
        raise ChecksumMismatch(f"artifact index: {index} is missing or does not match")
    try:
        rows = msgspec.json.decode(index.read_bytes(), type=list[IndexRow])
        return [(r.digest, folder / "artifacts" / blob_key(r.digest)) for r in rows]
    except (msgspec.DecodeError, InvalidInput) as exc:
        raise BackupError(f"artifact index {index}: {exc}") from exc
