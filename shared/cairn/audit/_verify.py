"""``cairn audit verify``: every workspace's events checked against its signed checkpoints.

Per workspace, in stream order: each checkpoint must decode, carry the trusted key's id and
a signature that verifies, follow the one before (index, first sequence, previous chain
hash), be stored after the events it covers, and list exactly the workspace's events the
log holds in its window; the first difference is named (:func:`compare_window`). Events
after the last checkpoint are counted as not yet covered. An anchor (the audit service's
``audit-heads.json``, or a copy kept elsewhere) adds what the log alone cannot show: that
checkpoints once signed are no longer there (a truncated tail).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cairn.audit._chain import (
    GENESIS,
    Finding,
    chain_step,
    compare_window,
    event_digest,
    key_id_of,
    split_subject,
    verify_signature,
)
from cairn.audit._read import read_raw
from cairn.bus import Connection
from cairn.errors import InvalidInput
from cairn.proto.events import ChainCheckpointed, ChainEntry, decode_envelope
from cairn.proto.subjects import AUDIT_KIND, EVENTS_ALL, events_of_workspace

__all__ = ["Head", "WorkspaceLog", "check_workspace", "read_anchor", "verify_log"]


class Head(NamedTuple):
    """Where a workspace's chain ended at a signed checkpoint."""

    number: int
    up_to_seq: int
    chain: str


@dataclass
class WorkspaceLog:
    """One workspace's events (digested) and checkpoints (stored sequence, decoded or the
    reason it is not), in stream order."""

    workspace: str
    entries: list[ChainEntry] = field(default_factory=list)
    checkpoints: list[tuple[int, ChainCheckpointed | str]] = field(default_factory=list)


_decode_error = (msgspec.DecodeError, msgspec.ValidationError, ValueError)


def _checkpoint_of(data: bytes) -> ChainCheckpointed | str:
    try:
        body = decode_envelope(data).data
    except _decode_error as exc:
        return f"undecodable ({exc})"
    except Exception as exc:  # UnknownMessageType and the like: a finding, not a crash
        return f"unreadable ({exc})"
    if not isinstance(body, ChainCheckpointed):
        return f"a {type(body).__name__} on the chain's subject"
    return body


async def read_workspaces(conn: Connection, workspace: str | None) -> dict[str, WorkspaceLog]:
    found: dict[str, WorkspaceLog] = {}
    subjects = events_of_workspace(workspace) if workspace else EVENTS_ALL
    async for raw in read_raw(conn, subjects):
        parts = raw.subject.split(".")
        if len(parts) != 5:
            continue  # not an aggregate's subject: no workspace's chain covers it
        ws = parts[2]
        log = found.get(ws)
        if log is None:
            log = found[ws] = WorkspaceLog(ws)
        if parts[3] == AUDIT_KIND:
            log.checkpoints.append((raw.seq, _checkpoint_of(raw.data)))
            continue
        named = split_subject(raw.subject)
        assert named is not None
        digest = event_digest(raw.subject, raw.msg_id, raw.data)
        log.entries.append(ChainEntry(seq=raw.seq, digest=digest, subject=named[1]))
    return found


def _check_checkpoint(
    ws: str, stored: int, cp: ChainCheckpointed, prev: Head, public: Ed25519PublicKey
) -> Finding | None:
    subject = f"cairn.ev.{ws}.{AUDIT_KIND}.chain"
    trusted = key_id_of(public)
    if cp.workspace != ws:
        return Finding("checkpoint", stored, subject, f"signed for workspace {cp.workspace}")
    if cp.key_id != trusted:
        return Finding("checkpoint", stored, subject, f"signed by {cp.key_id}, not {trusted}")
    if not verify_signature(public, cp):
        return Finding("checkpoint", stored, subject, f"signature of checkpoint {cp.index} fails")
    if cp.index != prev.number + 1 or cp.from_seq != prev.up_to_seq + 1:
        return Finding(
            "checkpoint",
            stored,
            subject,
            f"checkpoint {cp.index} (from seq {cp.from_seq}) follows checkpoint {prev.number}"
            f" (up to seq {prev.up_to_seq}): a checkpoint is missing or repeated",
        )
    if cp.prev_chain != prev.chain:
        return Finding("checkpoint", stored, subject, f"checkpoint {cp.index} breaks the chain")
    if stored <= cp.up_to_seq:
        return Finding(
            "reordered", stored, subject, f"checkpoint stored before seq {cp.up_to_seq} it covers"
        )
    chain = cp.prev_chain
    for entry in cp.events:
        chain = chain_step(chain, entry.seq, entry.digest)
    if chain != cp.chain:
        return Finding("checkpoint", stored, subject, f"checkpoint {cp.index}'s hash is wrong")
    return None


def check_workspace(
    log: WorkspaceLog, public: Ed25519PublicKey, anchor: Head | None = None
) -> dict[str, Any]:
    """The verdict on one workspace: counts, how far it verifies, the first finding."""
    ws = log.workspace
    prev = Head(0, 0, GENESIS)
    heads: dict[int, Head] = {}
    finding: Finding | None = None
    entries = log.entries
    at = 0  # entries before ``at`` lie in windows already compared
    for stored, cp in log.checkpoints:
        if isinstance(cp, str):
            finding = Finding("checkpoint", stored, f"cairn.ev.{ws}.{AUDIT_KIND}.chain", cp)
            break
        finding = _check_checkpoint(ws, stored, cp, prev, public)
        if finding is not None:
            break
        end = at
        while end < len(entries) and entries[end].seq <= cp.up_to_seq:
            end += 1
        finding = compare_window(ws, cp.events, entries[at:end])
        if finding is not None:
            break
        at, prev = end, Head(cp.index, cp.up_to_seq, cp.chain)
        heads[cp.index] = prev
    if finding is None and anchor is not None:
        finding = _against_anchor(ws, anchor, prev, heads)
    uncovered = sum(1 for e in entries if e.seq > prev.up_to_seq)
    return {
        "workspace": ws,
        "events": len(entries),
        "checkpoints": len(log.checkpoints),
        "verified_up_to": prev.up_to_seq,
        "uncovered": uncovered,
        "verdict": "ok" if finding is None else finding.kind,
        "seq": None if finding is None else finding.seq,
        "subject": None if finding is None else finding.subject,
        "finding": None if finding is None else finding.detail,
    }


def _against_anchor(ws: str, anchor: Head, last: Head, heads: dict[int, Head]) -> Finding | None:
    if anchor.number > last.number:
        return Finding(
            "truncated",
            last.up_to_seq + 1,
            f"cairn.ev.{ws}.>",
            f"the chain ends at checkpoint {last.number} (up to seq {last.up_to_seq}); the"
            f" anchor has checkpoint {anchor.number} up to seq {anchor.up_to_seq}",
        )
    if heads.get(anchor.number) != anchor:
        return Finding(
            "checkpoint",
            anchor.up_to_seq,
            f"cairn.ev.{ws}.{AUDIT_KIND}.chain",
            f"checkpoint {anchor.number} differs from the anchor's",
        )
    return None


def read_anchor(path: Path) -> dict[str, Head]:
    """The heads an anchor file holds (``audit-heads.json``: workspace → index, up_to_seq,
    chain)."""
    try:
        body = json.loads(path.read_text())
        return {
            ws: Head(int(h["index"]), int(h["up_to_seq"]), str(h["chain"]))
            for ws, h in body.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{path} is no anchor file: {exc}") from exc


async def verify_log(
    conn: Connection,
    public: Ed25519PublicKey,
    *,
    workspace: str | None = None,
    anchor: dict[str, Head] | None = None,
) -> list[dict[str, Any]]:
    """One verdict per workspace (those of the log and of the anchor), by name."""
    logs = await read_workspaces(conn, workspace)
    heads = anchor or {}
    names: Iterable[str] = logs.keys() | (
        heads.keys() if workspace is None else heads.keys() & {workspace}
    )
    return [
        check_workspace(logs.get(ws) or WorkspaceLog(ws), public, heads.get(ws))
        for ws in sorted(names)
    ]
