"""Secrets and the workspace keyring: tables of decisions (sealed tokens only, never values)."""

from __future__ import annotations

import pytest

from cairn.domain import secret
from cairn.errors import NotFound
from cairn.proto.events import (
    Event,
    SecretDeleted,
    SecretRead,
    SecretResealed,
    SecretSet,
    WorkspaceKeyRotated,
)
from cairn.proto.secrets import DeleteSecret
from tests.domain.gwt import Case, check, ids


def stored(version: int = 1, sealed: str = "k1:t1", key_id: str = "k1") -> SecretSet:
    return SecretSet(name="db-pass", version=version, sealed=sealed, key_id=key_id)


STORE = secret.StoreValue(name="db-pass", sealed="k1:t2", key_id="k1")
DELETE = DeleteSecret(command_id="c", name="db-pass")
READ = secret.ReadValue(name="db-pass", reader="dana", run_id="r1")
RESEAL = secret.ResealValue(name="db-pass", version=1, sealed="k2:t1", key_id="k2")
RESEALED = SecretResealed(name="db-pass", version=1, sealed="k2:t1", key_id="k2")
SET: list[Event] = [stored()]
GONE: list[Event] = [*SET, SecretDeleted(name="db-pass")]

CASES = [
    Case("set", [], STORE, [stored(sealed="k1:t2")]),
    Case("set again is the next version", SET, STORE, [stored(2, "k1:t2")]),
    Case("set after a delete goes on counting", GONE, STORE, [stored(2, "k1:t2")]),
    Case("delete", SET, DELETE, [SecretDeleted(name="db-pass")]),
    Case("delete what is not there", [], DELETE, NotFound, "no secret"),
    Case("delete twice", GONE, DELETE, NotFound, "no secret"),
    Case(
        "read names the reader, the run and the version",
        [*SET, stored(2)],
        READ,
        [SecretRead(name="db-pass", version=2, reader="dana", run_id="r1")],
    ),
    Case("read what is not there", [], READ, NotFound, "no secret"),
    Case("read what was deleted", GONE, READ, NotFound, "no secret"),
    Case("reseal", SET, RESEAL, [RESEALED]),
    Case("reseal under the key it has", [*SET, RESEALED], RESEAL, []),
    Case("reseal a version that was replaced", [*SET, stored(2)], RESEAL, []),
    Case("reseal what was deleted", GONE, RESEAL, []),
]

ROTATE = secret.RecordRotation(
    key_id="k2", previous=["k1"], dropped=["k1"], resealed_secrets=3, resealed_datastores=1
)
ROTATED = WorkspaceKeyRotated(
    key_id="k2", previous=["k1"], dropped=["k1"], resealed_secrets=3, resealed_datastores=1
)
KEYRING_CASES = [
    Case("record a rotation", [], ROTATE, [ROTATED]),
    Case("record another", [ROTATED], ROTATE, [ROTATED]),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_decide(case: Case) -> None:
    check(secret.AGGREGATE, case)


@pytest.mark.parametrize("case", KEYRING_CASES, ids=ids(KEYRING_CASES))
def test_decide_keyring(case: Case) -> None:
    check(secret.KEYRING, case)


def test_the_state_holds_the_live_token_and_counts_reads() -> None:
    state = secret.AGGREGATE.fold(
        [*SET, RESEALED, SecretRead(name="db-pass", version=1, reader="x")]
    )
    assert (state.version, state.sealed, state.key_id, state.reads) == (1, "k2:t1", "k2", 1)
    assert secret.AGGREGATE.fold(GONE).sealed is None
    ring = secret.KEYRING.fold([ROTATED, ROTATED])
    assert (ring.current, ring.rotations, ring.dropped) == ("k2", 2, ["k1", "k1"])


def test_commands_never_show_a_token() -> None:
    assert "t2" not in repr(STORE) and "t1" not in repr(RESEAL)
