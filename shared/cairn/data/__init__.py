"""Datastores' files: listing, wildcard matching, transfers (local directories and S3)."""

from cairn.data._stores import (
    Entry,
    LocalStore,
    S3Store,
    Store,
    match,
    open_store,
    read_only_tree,
    sha256_hex,
    writable_tree,
)

__all__ = [
    "Entry",
    "LocalStore",
    "S3Store",
    "Store",
    "match",
    "open_store",
    "read_only_tree",
    "sha256_hex",
    "writable_tree",
]
