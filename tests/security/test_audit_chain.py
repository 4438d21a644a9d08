"""The audit chain's pure parts: digests, signatures, and how a window's difference is named."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cairn.audit import (
    GENESIS,
    WorkspaceChain,
    chain_step,
    compare_window,
    event_digest,
    verify_signature,
)
from cairn.proto.events import ChainEntry


def _entry(seq: int, name: str) -> ChainEntry:
    subject = f"experiment.{name}"
    return ChainEntry(seq, event_digest(f"cairn.ev.w.{subject}", name, name.encode()), subject)


SIGNED = [_entry(1, "a"), _entry(3, "b"), _entry(4, "c"), _entry(6, "d")]
A, B, C, D = SIGNED


@pytest.mark.parametrize(
    ("now", "kind", "seq", "name"),
    [
        ([A, B, C, D], None, None, None),
        ([A, _entry(3, "x"), C, D], "modified", 3, "x"),
        ([A, C, D], "deleted", 3, "b"),
        ([A, ChainEntry(2, B.digest, B.subject), C, D], "reordered", 2, "b"),
        (
            [A, ChainEntry(3, C.digest, C.subject), ChainEntry(4, B.digest, B.subject), D],
            "reordered",
            3,
            "c",
        ),
        ([A, _entry(2, "x"), B, C, D], "inserted", 2, "x"),
        ([A, B, C, ChainEntry(5, A.digest, A.subject), D], "inserted", 5, "a"),
        (
            [A, ChainEntry(3, C.digest, C.subject), ChainEntry(4, D.digest, D.subject)],
            "deleted",
            3,
            "b",
        ),
    ],
)
def test_the_first_difference_is_named(
    now: list[ChainEntry], kind: str | None, seq: int | None, name: str | None
) -> None:
    found = compare_window("w", SIGNED, now)
    if kind is None:
        assert found is None
    else:
        assert found is not None
        assert (found.kind, found.seq, found.subject) == (
            kind,
            seq,
            f"cairn.ev.w.experiment.{name}",
        )


def test_a_digest_covers_subject_msg_id_and_data_each_length_prefixed() -> None:
    base = event_digest("cairn.ev.w.x.y", "m:0", b"{}")
    assert len({base, event_digest("cairn.ev.w.x.z", "m:0", b"{}")}) == 2
    assert base != event_digest("cairn.ev.w.x.y", "m:1", b"{}")
    assert base != event_digest("cairn.ev.w.x.y", "m:0", b"{ }")
    # moving bytes from one field to the next changes the digest (length prefixes)
    assert event_digest("a", "bc", b"") != event_digest("ab", "c", b"")


def test_a_checkpoint_signs_its_window_and_any_change_breaks_the_signature() -> None:
    key = Ed25519PrivateKey.generate()
    chain = WorkspaceChain("w")
    for e in SIGNED:
        chain.add(e.seq, e.subject, e.digest, now=0.0)
    cp = chain.cut(key, every_events=3)
    assert (cp.index, cp.from_seq, cp.up_to_seq, cp.prev_chain) == (1, 1, 4, GENESIS)
    expected = GENESIS
    for e in SIGNED[:3]:
        expected = chain_step(expected, e.seq, e.digest)
    assert cp.chain == expected and cp.events == SIGNED[:3]
    assert verify_signature(key.public_key(), cp)
    assert not verify_signature(Ed25519PrivateKey.generate().public_key(), cp)
    for change in ({"up_to_seq": 5}, {"events": SIGNED[:2]}, {"prev_chain": "1" * 64}):
        assert not verify_signature(key.public_key(), msgspec.structs.replace(cp, **change))
    assert chain.cut(key, every_events=3) == cp  # deterministic: replicas sign the same bytes
    assert chain.adopt(cp, stored_at=9)
    assert [e.seq for e in chain.pending.entries] == [6] and chain.checkpoint_seq == 9
