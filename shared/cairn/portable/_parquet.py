"""An export's parts as Parquet files (``cairn export --format parquet``): one file per part
(``events.parquet``, ``metrics.parquet``, ``checkpoints.parquet``) with the columns of the JSON
lines, one row a line: ``seq`` (int64), ``subject``, ``msg_id``, ``digest``, ``chain``
(strings; ``chain`` is "" but for events) and ``data`` (binary: the stored bytes, unchanged).

Read back, a file must have exactly these columns of these types and, before any row is
read, as many rows as the manifest counts and row groups no larger than the stream could
store that many messages; rows are then read a batch at a time (never the whole file).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from cairn.errors import InvalidInput

__all__ = ["SCHEMA", "ParquetPart", "read_rows"]

SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("msg_id", pa.string(), nullable=False),
        pa.field("digest", pa.string(), nullable=False),
        pa.field("chain", pa.string(), nullable=False),
        pa.field("data", pa.binary(), nullable=False),
    ]
)
#: a row group is written when it holds this many rows or this many bytes of data
_GROUP_ROWS = 4096
_GROUP_BYTES = 8 << 20
_READ_ROWS = 1024


class ParquetPart:
    """One part being written: rows gathered into row groups of bounded size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")
        self._rows: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        self._bytes = 0

    def write(
        self, seq: int, subject: str, msg_id: str, digest: str, chain: str, data: bytes
    ) -> None:
        for name, value in zip(
            SCHEMA.names, (seq, subject, msg_id, digest, chain, data), strict=True
        ):
            self._rows[name].append(value)
        self._bytes += len(data)
        if len(self._rows["seq"]) >= _GROUP_ROWS or self._bytes >= _GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._rows["seq"]:
            self._writer.write_table(pa.table(self._rows, schema=SCHEMA))
            self._rows = {name: [] for name in SCHEMA.names}
            self._bytes = 0

    def close(self) -> None:
        """The rows left, and the file's footer (a file without it is no Parquet file)."""
        try:
            self._flush()
        finally:
            self._writer.close()


def _refuse(file: str, what: str) -> InvalidInput:
    return InvalidInput(f"the export is refused: {file}: {what}")


def read_rows(
    f: BinaryIO, file: str, count: int, largest_row: int
) -> Iterator[tuple[int, str, str, str, str, bytes]]:
    """The rows of the Parquet file open in ``f``, in order, as tuples in the column order of
    :data:`SCHEMA`; refused (naming ``file``) unless it has those columns, ``count`` rows, and
    row groups of at most ``largest_row`` bytes a row."""
    try:
        parquet = pq.ParquetFile(f)
        schema = parquet.schema_arrow
        meta = parquet.metadata
    except (pa.ArrowException, OSError) as exc:
        raise _refuse(file, f"not a Parquet file: {exc}") from exc
    if [(c.name, c.type) for c in schema] != [(c.name, c.type) for c in SCHEMA]:
        raise _refuse(file, f"its columns are {schema.names}, not {SCHEMA.names}")
    if meta.num_rows != count:
        raise _refuse(
            file, f"it holds {meta.num_rows} rows, the manifest counts {count} (truncated?)"
        )
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.total_byte_size > max(group.num_rows, 1) * largest_row:
            raise _refuse(file, f"row group {i} is larger than its rows could be")
    try:
        for batch in parquet.iter_batches(batch_size=_READ_ROWS):
            columns = [batch.column(name) for name in SCHEMA.names]
            if any(c.null_count for c in columns):
                raise _refuse(file, "a row with an empty column")
            yield from zip(*(c.to_pylist() for c in columns), strict=True)
    except (pa.ArrowException, OSError) as exc:
        raise _refuse(file, f"unreadable: {exc}") from exc
