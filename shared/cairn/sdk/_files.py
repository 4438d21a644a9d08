"""Run-file transfers live in :mod:`cairn.data`; these names stay importable from here for
callers written before the move."""

from cairn.data import download_blob, download_file, upload_file

__all__ = ["download_blob", "download_file", "upload_file"]
