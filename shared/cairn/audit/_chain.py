"""The audit chain, pure: event digests, the chain step, a checkpoint's canonical bytes and
its signature, one workspace's chain as the audit service builds it, and the comparison of a
checkpoint's window with what the log holds now (docs/design.md, *Tamper evidence*).

Every encoding here is explicit bytes (big-endian integers, length-prefixed strings), so a
verifier in another language needs SHA-256 and Ed25519 and nothing of Cairn's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cairn.proto.events import ChainCheckpointed, ChainEntry
from cairn.proto.subjects import AUDIT_KIND

__all__ = [
    "GENESIS",
    "Finding",
    "Pending",
    "RawEvent",
    "WorkspaceChain",
    "chain_step",
    "compare_window",
    "event_digest",
    "key_id_of",
    "signed_bytes",
    "split_subject",
    "verify_signature",
]

_EVENT = b"cairn-audit-event-v1\x00"
_CHAIN = b"cairn-audit-chain-v1\x00"
_CHECKPOINT = b"cairn-audit-checkpoint-v1\x00"
#: the chain hash before a workspace's first event
GENESIS = "0" * 64
#: a checkpoint's window is cut before its encoded list passes this (EVENTS takes 256 KiB)
MAX_WINDOW_BYTES = 160 * 1024
#: the list's bytes per entry besides its subject (sequence, digest, JSON punctuation)
ENTRY_OVERHEAD = 90


class RawEvent(NamedTuple):
    """A stored message as the server hands it out: what the digest covers, and where."""

    seq: int
    subject: str
    msg_id: str
    data: bytes


def _lp(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def event_digest(subject: str, msg_id: str, data: bytes) -> str:
    """SHA-256 over the event's subject, its ``Nats-Msg-Id`` and its data bytes, each
    length-prefixed (hex). Not its sequence (the chain binds that) nor the server's
    timestamp or other headers (docs/security.md, *Tamper evidence*)."""
    body = _EVENT + _lp(subject.encode()) + _lp(msg_id.encode()) + _lp(data)
    return hashlib.sha256(body).hexdigest()


def chain_step(prev: str, seq: int, digest: str) -> str:
    """The chain hash after the event at stream sequence ``seq`` with ``digest``."""
    body = _CHAIN + bytes.fromhex(prev) + seq.to_bytes(8, "big") + bytes.fromhex(digest)
    return hashlib.sha256(body).hexdigest()


def split_subject(subject: str) -> tuple[str, str] | None:
    """``cairn.ev.<ws>.<kind>.<id>`` → (workspace, ``<kind>.<id>``); None for a subject of
    another shape, or a checkpoint's own (those are signed, not chained)."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "cairn" or parts[1] != "ev" or parts[3] == AUDIT_KIND:
        return None
    return parts[2], f"{parts[3]}.{parts[4]}"


def signed_bytes(
    workspace: str,
    index: int,
    from_seq: int,
    up_to_seq: int,
    prev_chain: str,
    chain: str,
    events: list[ChainEntry],
    key_id: str,
) -> bytes:
    """What a checkpoint's signature covers, in this order: workspace, index, from_seq,
    up_to_seq, prev_chain, chain, the number of entries, each entry (seq, digest, subject),
    key_id; integers as 8 bytes big-endian, hashes as 32 raw bytes, strings length-prefixed
    (4 bytes) UTF-8."""
    out = bytearray(_CHECKPOINT)
    out += _lp(workspace.encode())
    for number in (index, from_seq, up_to_seq):
        out += number.to_bytes(8, "big")
    out += bytes.fromhex(prev_chain) + bytes.fromhex(chain)
    out += len(events).to_bytes(4, "big")
    for entry in events:
        out += entry.seq.to_bytes(8, "big") + bytes.fromhex(entry.digest)
        out += _lp(entry.subject.encode())
    out += _lp(key_id.encode())
    return bytes(out)


def _signed_bytes_of(cp: ChainCheckpointed) -> bytes:
    return signed_bytes(
        cp.workspace,
        cp.index,
        cp.from_seq,
        cp.up_to_seq,
        cp.prev_chain,
        cp.chain,
        cp.events,
        cp.key_id,
    )


def key_id_of(public: Ed25519PublicKey) -> str:
    """``ed25519-`` and the first 16 hex digits of the SHA-256 of the raw public key."""
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(public: Ed25519PublicKey, cp: ChainCheckpointed) -> bool:
    try:
        public.verify(bytes.fromhex(cp.signature), _signed_bytes_of(cp))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class Pending:
    """Events of a workspace seen after its last checkpoint, not yet signed."""

    entries: list[ChainEntry] = field(default_factory=list)
    #: the chain hash after each entry (same length as ``entries``)
    chains: list[str] = field(default_factory=list)
    size: int = 0
    since: float | None = None  # monotonic time the first of them was seen


@dataclass
class WorkspaceChain:
    """One workspace's chain as the audit service follows it: where its last checkpoint
    ended (``index``, ``up_to_seq``, ``chain``, and the stream sequence the checkpoint is
    stored at, the CAS for the next) and what came after."""

    workspace: str
    index: int = 0
    up_to_seq: int = 0
    chain: str = GENESIS
    checkpoint_seq: int = 0
    pending: Pending = field(default_factory=Pending)

    def add(self, seq: int, subject: str, digest: str, now: float) -> None:
        """An event of this workspace at ``seq``; one at or before the last checkpoint's end
        (read again after a restart) is already signed and passed over."""
        if seq <= self.up_to_seq or (self.pending.entries and seq <= self.pending.entries[-1].seq):
            return
        p = self.pending
        prev = p.chains[-1] if p.chains else self.chain
        p.entries.append(ChainEntry(seq=seq, digest=digest, subject=subject))
        p.chains.append(chain_step(prev, seq, digest))
        p.size += ENTRY_OVERHEAD + len(subject)
        if p.since is None:
            p.since = now

    def due(self, now: float, every_events: int, every_s: float) -> bool:
        p = self.pending
        if not p.entries:
            return False
        full = len(p.entries) >= every_events or p.size >= MAX_WINDOW_BYTES
        return full or (p.since is not None and now - p.since >= every_s)

    def cut(self, private: Ed25519PrivateKey, every_events: int) -> ChainCheckpointed:
        """The next checkpoint: the pending events up to ``every_events`` of them (and the
        window's byte bound), signed. Nothing changes here until :meth:`adopt`."""
        p = self.pending
        count, size = 0, 0
        for entry in p.entries[:every_events]:
            size += ENTRY_OVERHEAD + len(entry.subject)
            if count and size > MAX_WINDOW_BYTES:
                break
            count += 1
        events = p.entries[:count]
        key_id = key_id_of(private.public_key())
        fields = (
            self.workspace,
            self.index + 1,
            self.up_to_seq + 1,
            events[-1].seq,
            self.chain,
            p.chains[count - 1],
            events,
            key_id,
        )
        return ChainCheckpointed(
            workspace=self.workspace,
            index=self.index + 1,
            from_seq=self.up_to_seq + 1,
            up_to_seq=events[-1].seq,
            prev_chain=self.chain,
            chain=p.chains[count - 1],
            events=events,
            key_id=key_id,
            signature=private.sign(signed_bytes(*fields)).hex(),
        )

    def adopt(self, cp: ChainCheckpointed, stored_at: int) -> bool:
        """The checkpoint ``cp`` (stored at stream sequence ``stored_at``) is the chain's
        latest now: its events leave the pending ones. False when what this chain saw up to
        ``cp.up_to_seq`` hashes otherwise (another writer saw other events: a finding)."""
        p = self.pending
        upto = cp.up_to_seq
        kept = [i for i, e in enumerate(p.entries) if e.seq > upto]
        agrees = True
        covered = len(p.entries) - len(kept)
        if covered and p.entries[covered - 1].seq == upto:
            agrees = p.chains[covered - 1] == cp.chain
        self.index, self.up_to_seq, self.chain = cp.index, upto, cp.chain
        self.checkpoint_seq = stored_at
        entries = [p.entries[i] for i in kept]
        self.pending = Pending()
        for entry in entries:  # chained again from the adopted end
            self.add(entry.seq, entry.subject, entry.digest, p.since or 0.0)
        return agrees


class Finding(NamedTuple):
    """What is wrong at one stream sequence: ``kind`` is modified, deleted, inserted,
    reordered (or, for checkpoints themselves, checkpoint)."""

    kind: str
    seq: int
    subject: str
    detail: str


def compare_window(
    workspace: str, expected: list[ChainEntry], actual: list[ChainEntry]
) -> Finding | None:
    """The first difference, by stream sequence, between a checkpoint's signed window and the
    workspace's events the log holds in that window now; None when they are the same."""
    exp = {e.seq: e for e in expected}
    act = {e.seq: e for e in actual}
    exp_at = {e.digest: e.seq for e in expected}
    act_at = {e.digest: e.seq for e in actual}
    prefix = f"cairn.ev.{workspace}."
    for seq in sorted(exp.keys() | act.keys()):
        e, a = exp.get(seq), act.get(seq)
        if e is not None and a is not None and e.digest == a.digest:
            continue
        if e is not None and e.digest not in act_at:
            if a is not None and a.digest not in exp_at:
                return Finding(
                    "modified",
                    seq,
                    prefix + a.subject,
                    f"was {prefix + e.subject}, digest"
                    f" {e.digest[:16]}…, now digest {a.digest[:16]}…",
                )
            return Finding("deleted", seq, prefix + e.subject, "no longer in the log")
        if a is not None and a.digest not in exp_at:
            return Finding("inserted", seq, prefix + a.subject, "not in the signed window")
        if a is not None:  # what is here was signed at another sequence
            was = exp_at[a.digest]
            there = act.get(was)
            if there is not None and there.digest == a.digest:  # and is still there
                return Finding("inserted", seq, prefix + a.subject, f"a copy of seq {was}")
            return Finding(
                "reordered", seq, prefix + a.subject, f"signed at seq {was}, now at seq {seq}"
            )
        assert e is not None  # signed here, found at another sequence
        return Finding(
            "reordered",
            seq,
            prefix + e.subject,
            f"signed at seq {seq}, now at seq {act_at[e.digest]}",
        )
    return None
