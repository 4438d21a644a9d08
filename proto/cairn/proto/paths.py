"""The one chokepoint for run file paths (and any other path a client names inside a store).

A valid path is relative POSIX: ``/``-separated segments, none empty, ``.`` or ``..``. What is
refused, and why (the MLflow CVE history in ``reliability.md`` §3): absolute paths, drive letters
and URI schemes; backslashes; control and format characters (bidirectional overrides among them,
named by code point); percent-encoding that decodes to something
else (double and triple encoding included, and overlong UTF-8); forms whose Unicode
compatibility normalisation (NFKC, e.g. fullwidth ``．．／``) would be a traversal; segments over
255 bytes and paths over 1024 bytes. The path is returned unchanged: what is validated is what
is used.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from cairn.proto._base import refuse_invisible
from cairn.proto.errors import InvalidName

__all__ = ["MAX_PATH_BYTES", "MAX_SEGMENT_BYTES", "validate_run_path"]

_SCHEME_OR_DRIVE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255


def _structure(path: str, shown: str) -> None:
    if path.startswith("/") or "\\" in path:
        raise InvalidName(f"path {shown} must be relative and use '/' separators")
    segments = path.split("/")
    if _SCHEME_OR_DRIVE.match(segments[0]):
        raise InvalidName(f"path {shown} must not name a drive or a URI scheme")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidName(f"path {shown} has an empty, '.' or '..' segment")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidName(f"path {shown} has a segment over {MAX_SEGMENT_BYTES} bytes")


def validate_run_path(path: object) -> str:
    """Return ``path`` if it is a safe relative run file path, else raise ``InvalidName``."""
    if not isinstance(path, str) or not path:
        raise InvalidName("a path must be a non-empty string")
    shown = repr(path)[:120]
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidName(f"path {shown} is over {MAX_PATH_BYTES} bytes")
    refuse_invisible(path, "path")
    if unquote(path, errors="replace") != path:
        raise InvalidName(f"path {shown} contains percent-encoding")
    _structure(path, shown)
    normal = unicodedata.normalize("NFKC", path)
    if normal != path:
        _structure(normal, shown)
    return path
