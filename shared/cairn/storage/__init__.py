"""Content-addressed blob storage behind one port, with a local and an S3 backend."""

from cairn.storage._local import LocalBlobStore
from cairn.storage._port import BlobStore, blob_key, digest_of_file
from cairn.storage._s3 import S3BlobStore, S3Config, put_s3_file

__all__ = [
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "S3Config",
    "blob_key",
    "digest_of_file",
    "put_s3_file",
]
