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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cairn.audit._chain import (
    GENESIS,
    Finding,
    RawEvent,
    chain_step,
    compare_window,
    event_digest,
    key_id_of,
    verify_signature,
)
from cairn.audit._read import read_in_order
from cairn.bus import Connection
from cairn.errors import InvalidInput
from cairn.proto.events import ChainCheckpointed, ChainEntry, decode_envelope
from cairn.proto.subjects import AUDIT_KIND, EVENTS_ALL, events_of_workspace

__all__ = ["Head", "WorkspaceCheck", "read_anchor", "verify_log"]


class Head(NamedTuple):
    """Where a workspace's chain ended at a signed checkpoint."""

    number: int
    up_to_seq: int
    chain: str


@dataclass
class WorkspaceCheck:
    """One workspace's check, fed in stream order: its events (digested) and checkpoints
    (decoded, or the reason they are not). It keeps only the events after the last window
    compared, so a verify holds about one window per workspace (and what is not covered)."""

    workspace: str
    public: Ed25519PublicKey
    anchor: Head | None = None
    prev: Head = field(default_factory=lambda: Head(0, 0, GENESIS))
    pending: list[ChainEntry] = field(default_factory=list)
    finding: Finding | None = None
    events: int = 0
    checkpoints: int = 0
    uncovered: int = 0
    #: the head the anchor names, when the chain passed it
    at_anchor: Head | None = None

    def event(self, entry: ChainEntry) -> None:
        self.events += 1
        if entry.seq > self.prev.up_to_seq:
            self.uncovered += 1
        if self.finding is None:
            self.pending.append(entry)

    def checkpoint(self, stored: int, cp: ChainCheckpointed | str) -> None:
        self.checkpoints += 1
        if self.finding is not None:
            return
        ws = self.workspace
        if isinstance(cp, str):
            self.finding = Finding("checkpoint", stored, f"cairn.ev.{ws}.{AUDIT_KIND}.chain", cp)
            return
        self.finding = _check_checkpoint(ws, stored, cp, self.prev, self.public)
        if self.finding is not None:
            return
        cut = 0
        while cut < len(self.pending) and self.pending[cut].seq <= cp.up_to_seq:
            cut += 1
        self.finding = compare_window(ws, cp.events, self.pending[:cut])
        if self.finding is not None:
            return
        del self.pending[:cut]
        self.uncovered = len(self.pending)
        self.prev = Head(cp.index, cp.up_to_seq, cp.chain)
        if self.anchor is not None and cp.index == self.anchor.number:
            self.at_anchor = self.prev

    def verdict(self) -> dict[str, Any]:
        """Counts, how far the workspace verifies, and its first finding."""
        finding = self.finding
        if finding is None and self.anchor is not None:
            finding = _against_anchor(self.workspace, self.anchor, self.prev, self.at_anchor)
        return {
            "workspace": self.workspace,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "verified_up_to": self.prev.up_to_seq,
            "uncovered": self.uncovered,
            "verdict": "ok" if finding is None else finding.kind,
            "seq": None if finding is None else finding.seq,
            "subject": None if finding is None else finding.subject,
            "finding": None if finding is None else finding.detail,
        }


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


def _against_anchor(ws: str, anchor: Head, last: Head, passed: Head | None) -> Finding | None:
    if anchor.number > last.number:
        return Finding(
            "truncated",
            last.up_to_seq + 1,
            f"cairn.ev.{ws}.>",
            f"the chain ends at checkpoint {last.number} (up to seq {last.up_to_seq}); the"
            f" anchor has checkpoint {anchor.number} up to seq {anchor.up_to_seq}",
        )
    if passed != anchor:
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
    """One verdict per workspace (those of the log and of the anchor), by name: the log
    read once, in order, up to its last sequence when the read began (an ordered consumer:
    :func:`cairn.audit.read_in_order`), each event digested and checked as it comes."""
    heads = {
        ws: head for ws, head in (anchor or {}).items() if workspace is None or ws == workspace
    }
    checks: dict[str, WorkspaceCheck] = {}

    def check_of(ws: str) -> WorkspaceCheck:
        found = checks.get(ws)
        if found is None:
            found = checks[ws] = WorkspaceCheck(ws, public, heads.get(ws))
        return found

    def take(raw: RawEvent) -> None:
        parts = raw.subject.split(".")
        if len(parts) != 5:
            return  # not an aggregate's subject: no workspace's chain covers it
        check = check_of(parts[2])
        if parts[3] == AUDIT_KIND:
            check.checkpoint(raw.seq, _checkpoint_of(raw.data))
            return
        digest = event_digest(raw.subject, raw.msg_id, raw.data)
        check.event(ChainEntry(seq=raw.seq, digest=digest, subject=f"{parts[3]}.{parts[4]}"))

    subjects = events_of_workspace(workspace) if workspace else EVENTS_ALL
    await read_in_order(conn, subjects, take)
    for ws in heads:
        check_of(ws)
    return [checks[ws].verdict() for ws in sorted(checks)]
