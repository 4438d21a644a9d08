"""Whole-store backups (``cairn backup DIR``) and their restore (``cairn restore DIR``).

A backup is a folder::

    DIR/manifest.json                 what is in it (written last: no manifest, no backup)
    DIR/streams/<STREAM>.tar.s2       one JetStream snapshot per stream (cairn.bus._snapshot)
    DIR/artifacts/index.json          the artifact store's index: every blob, digest and size
    DIR/artifacts/sha256/ab/cd/<hex>  the blobs themselves (local artifact store only)

Streams: METRICS, LOGS and every key-value bucket (``KV_*``), then EVENTS last, so that
everything the other streams refer to (a metric batch's run) is in the EVENTS taken after
them. Each is taken at one position, the state the server answered when its snapshot began
(``last_seq``, ``messages``), recorded with the stream's configuration and the SHA-256 of its
file. Writes that race a snapshot may leave messages past that position in the file (the
server copies the block being written as it is then); the recorded position is the one
guaranteed, and the one the read models' hashes are taken at. JOBS is not taken: its
tickets are derived from the log, and the scheduler publishes a queued run's ticket again
(deduplicated) on its next pass.

The artifact store's index is the list of blobs the store holds. Blobs are content-addressed
(their name is their SHA-256) and referenced by events; the artifact service keeps no other
metadata. With the local store the blobs are copied too; with S3 only the index is written
(the bucket is backed up with S3's own tools, and ``restore`` reports indexed blobs it lacks).

``read_models`` records each read model's content hash (``cairn replay``'s) rebuilt up to the
backed-up position of its stream; ``restore --verify`` rebuilds them from the restored store
to the same positions and compares.

Restore refuses a backup whose manifest is missing or unreadable, whose files do not match
their checksums, or whose stream configurations are not the streams' own (an edited manifest
must not make EVENTS deletable), before it touches the server; it refuses a stream that
exists with history (``StreamNotEmpty``) unless forced, which deletes it just before restoring
it (and purges JOBS). An existing empty stream (provisioned by services that were started) is
replaced. Each snapshot is hashed again as it is sent, and the stream made only when it
matches. A restore that fails part-way is finished by running it again, forced. Both need
the admin (``cairn-admin``): only it may snapshot, restore or delete a stream.

Errors: ``BackupError`` (an ``InvalidInput``) and below it ``ManifestMissing``,
``ChecksumMismatch`` (naming the stream or file), ``BackupDirNotEmpty``; ``StreamNotEmpty``
is an ``AlreadyExists`` naming the stream.
"""

from __future__ import annotations

from cairn.backup._manifest import (
    FORMAT,
    MANIFEST,
    ArtifactsEntry,
    BackupDirNotEmpty,
    BackupError,
    ChecksumMismatch,
    Manifest,
    ManifestMissing,
    ReadModelEntry,
    StreamEntry,
    StreamNotEmpty,
    read_manifest,
    verify_files,
)
from cairn.backup._restore import restore
from cairn.backup._take import backup, verify_read_models

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ArtifactsEntry",
    "BackupDirNotEmpty",
    "BackupError",
    "ChecksumMismatch",
    "Manifest",
    "ManifestMissing",
    "ReadModelEntry",
    "StreamEntry",
    "StreamNotEmpty",
    "backup",
    "read_manifest",
    "restore",
    "verify_files",
    "verify_read_models",
]
