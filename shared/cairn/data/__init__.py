"""Moving bytes: datastores' files (local directories and S3), run files and blobs over NATS,
and dataset versions made local.

The SDK and the agent both move data through this package, each with the RPC client of its
workspace; it imports neither of them (layers: proto <- domain <- bus / data <- services, SDK).
"""

from cairn.data._access import (
    Datastores,
    Uploaded,
    download_entries,
    download_prefix,
    list_entries,
    open_datastore,
    upload_pairs,
)
from cairn.data._datasets import (
    common_dir,
    fingerprint,
    materialise,
    resolve_urls,
    snapshot_files,
    snapshot_url_files,
)
from cairn.data._preview import (
    PREVIEW_BYTES,
    PREVIEW_ROWS,
    TablePreview,
    is_snapshot,
    preview_table,
)
from cairn.data._progress import Progress, interactive
from cairn.data._stores import (
    Entry,
    LocalStore,
    S3Store,
    Store,
    check_store,
    local_target,
    match,
    open_store,
    read_only_tree,
    sha256_hex,
    writable_tree,
)
from cairn.data._transfer import (
    blob_chunks,
    download_blob,
    download_file,
    read_blob_head,
    upload_file,
)
from cairn.data._urls import (
    MAX_URL_BYTES,
    Remote,
    check_url,
    download_url,
    fetch_remote,
    is_url,
    list_url,
    resolve_s3_url,
    s3_location,
    url_file_name,
)

__all__ = [
    "MAX_URL_BYTES",
    "PREVIEW_BYTES",
    "PREVIEW_ROWS",
    "Datastores",
    "Entry",
    "LocalStore",
    "Progress",
    "Remote",
    "S3Store",
    "Store",
    "TablePreview",
    "Uploaded",
    "blob_chunks",
    "check_store",
    "check_url",
    "common_dir",
    "download_blob",
    "download_entries",
    "download_file",
    "download_prefix",
    "download_url",
    "fetch_remote",
    "fingerprint",
    "interactive",
    "is_snapshot",
    "is_url",
    "list_entries",
    "list_url",
    "local_target",
    "match",
    "materialise",
    "open_datastore",
    "open_store",
    "preview_table",
    "read_blob_head",
    "read_only_tree",
    "resolve_s3_url",
    "resolve_urls",
    "s3_location",
    "sha256_hex",
    "snapshot_files",
    "snapshot_url_files",
    "upload_file",
    "upload_pairs",
    "url_file_name",
    "writable_tree",
]
