"""Tamper evidence for the event log: each workspace's events form a hash chain whose
checkpoints the audit service signs into the log (``cairn.services.audit``), and which
``cairn audit verify`` checks (docs/design.md, *Tamper evidence*)."""

from cairn.audit._chain import (
    GENESIS,
    Finding,
    RawEvent,
    WorkspaceChain,
    chain_step,
    compare_window,
    event_digest,
    key_id_of,
    signed_bytes,
    split_subject,
    verify_signature,
)
from cairn.audit._files import (
    heads_path,
    load_or_create_signing_key,
    parse_public_key,
    private_key_path,
    public_key_hex,
    public_key_path,
    read_public_key,
)
from cairn.audit._read import read_batch, read_in_order, read_raw
from cairn.audit._verify import Head, WorkspaceCheck, read_anchor, verify_log

__all__ = [
    "GENESIS",
    "Finding",
    "Head",
    "RawEvent",
    "WorkspaceChain",
    "WorkspaceCheck",
    "chain_step",
    "compare_window",
    "event_digest",
    "heads_path",
    "key_id_of",
    "load_or_create_signing_key",
    "parse_public_key",
    "private_key_path",
    "public_key_hex",
    "public_key_path",
    "read_anchor",
    "read_batch",
    "read_in_order",
    "read_public_key",
    "read_raw",
    "signed_bytes",
    "split_subject",
    "verify_log",
    "verify_signature",
]
