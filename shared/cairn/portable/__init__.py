"""The event log as a portable record: ``cairn export`` writes one workspace's history (its
events with their audit chain, its metric batches, its signed checkpoints and, when asked, the
blobs they name) into a folder of JSON lines; ``cairn import`` checks such a folder whole and
stores it into another home or cluster with ids, order and bytes unchanged
(docs/design.md, *Export and import*)."""

from cairn.portable._export import export_workspace
from cairn.portable._format import (
    FORMAT,
    FORMAT_VERSION,
    ArtifactEntry,
    EventsPart,
    Line,
    Loaded,
    Manifest,
    Part,
    load_export,
)
from cairn.portable._import import Imported, import_workspace, refuse_unsigned, verify_export

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ArtifactEntry",
    "EventsPart",
    "Imported",
    "Line",
    "Loaded",
    "Manifest",
    "Part",
    "export_workspace",
    "import_workspace",
    "load_export",
    "refuse_unsigned",
    "verify_export",
]
