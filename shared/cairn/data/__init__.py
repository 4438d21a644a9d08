"""Datastores' files: listing, wildcard matching, transfers (local directories and S3)."""

from cairn.data._stores import Entry, LocalStore, S3Store, Store, match, open_store, sha256_file

__all__ = ["Entry", "LocalStore", "S3Store", "Store", "match", "open_store", "sha256_file"]
