"""The first rows of a tabular dataset version, read with bounds: at most ``rows`` rows and
``max_bytes`` bytes in all, from the start of its files (never a whole file).

Only a snapshot version is previewed (registered with ``--snapshot`` / ``snapshot=True``):
its copies are read from the artifact store through the caller's own connection
(``read_blob_head``), which any member who may read the workspace can do. A version of
references would need the datastore's credentials or folder where the preview runs, which a
gateway must not use on anyone's behalf: its data is read with the SDK instead
(:func:`is_snapshot`). Cells are text as the files hold them (no type inference): a preview
shows what is there.
"""

from __future__ import annotations

import codecs
import csv
import io

import msgspec

from cairn.data._transfer import read_blob_head
from cairn.errors import InvalidInput
from cairn.proto.assets import DataFile, DatasetSpec
from cairn.rpc import Client

__all__ = ["PREVIEW_BYTES", "PREVIEW_ROWS", "TablePreview", "is_snapshot", "preview_table"]

PREVIEW_ROWS = 50
PREVIEW_BYTES = 4 * 1024 * 1024
#: what is read of a file first; more (up to the byte bound) only when it holds too few rows
FIRST_READ = 256 * 1024


class TablePreview(msgspec.Struct, frozen=True, kw_only=True):
    """``columns`` (the header's names, else ``0, 1, ...``) and up to the asked number of
    ``rows``; ``more``: the version holds more than was read or shown; ``files``: the files
    the rows came from (``datastore:path``)."""

    columns: list[str]
    rows: list[list[str]]
    more: bool
    files: list[str]


def is_snapshot(spec: DatasetSpec) -> bool:
    """Whether every file of version ``spec`` has its copy in the artifact store."""
    return spec.snapshot and all(f.blob is not None for f in spec.files)


async def _head(client: Client, f: DataFile, limit: int) -> bytes:
    if f.blob is None:
        raise InvalidInput("previews are shown for snapshot versions only")
    return await read_blob_head(client, f.blob, limit)


def _rows(data: bytes, complete: bool, separator: str) -> list[list[str]]:
    """The delimited rows in ``data``; unless ``complete`` (the bytes stop inside the file),
    without the last, which may be cut (inside a line, or inside a quoted cell that spans
    lines)."""
    text = codecs.getincrementaldecoder("utf-8-sig")(errors="replace").decode(data, final=True)
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=separator) if row]
    except csv.Error as exc:
        raise InvalidInput(f"the file is not delimited text this preview can read: {exc}") from exc
    return rows if complete else rows[:-1]


async def _file_rows(
    client: Client, f: DataFile, spec: DatasetSpec, want: int, budget: int
) -> tuple[list[list[str]], int, bool]:
    """The rows at the start of ``f`` (a header included), the bytes read, and whether the
    whole file was read: a first small read, a larger one (up to ``budget``) only when it
    held too few rows."""
    limit = min(f.size, FIRST_READ, budget)
    while True:
        data = await _head(client, f, limit)
        complete = len(data) >= f.size
        lines = _rows(data, complete, spec.separator)
        if complete or len(lines) > want or limit >= min(f.size, budget):
            return lines, len(data), complete
        limit = min(f.size, budget)


async def preview_table(
    client: Client,
    spec: DatasetSpec,
    *,
    rows: int = PREVIEW_ROWS,
    max_bytes: int = PREVIEW_BYTES,
) -> TablePreview:
    """The first ``rows`` rows of tabular snapshot version ``spec``, reading at most
    ``max_bytes`` bytes of its copies (in the order it recorded them)."""
    if spec.kind != "tabular":
        raise InvalidInput("only a tabular dataset has rows to preview")
    if not spec.files:
        raise InvalidInput("this version recorded no files to preview")
    if not is_snapshot(spec):
        raise InvalidInput(
            "previews are shown for snapshot versions only (registered with --snapshot or"
            " snapshot=True); read this one with the SDK"
        )
    if len(spec.separator) != 1:
        raise InvalidInput(f"the preview reads one-character separators, not {spec.separator!r}")
    columns: list[str] = []
    found: list[list[str]] = []
    used: list[str] = []
    budget, more = max_bytes, False
    for f in spec.files:
        if len(found) >= rows or budget <= 0:
            more = True
            break
        want = rows - len(found) + int(spec.header)
        lines, read, complete = await _file_rows(client, f, spec, want, budget)
        budget -= read
        more = more or not complete
        used.append(f"{f.datastore}:{f.path}")
        if spec.header and lines:
            columns = columns or lines[0]
            lines = lines[1:]
        found += lines
    if len(found) > rows:
        more, found = True, found[:rows]
    width = max([len(columns), *(len(r) for r in found)], default=0)
    columns = columns + [str(n) for n in range(len(columns), width)]
    return TablePreview(columns=columns, rows=found, more=more, files=used)
