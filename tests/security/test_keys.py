"""Workspace keyrings without a server: made on first use (0600), tokens that name their key,
the single-key file of before read as the key ``legacy``, rotation and dropping old keys."""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography.fernet import Fernet

from cairn.errors import CairnError, PermissionDenied
from cairn.secrets import (
    LEGACY_KEY_ID,
    _lock,
    add_key,
    drop_keys,
    key_id_of,
    keyring,
    seal,
    seal_text,
    sealing,
    unseal,
    unseal_text,
)
from cairn.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return msgspec.convert({"home": str(tmp_path)}, Settings)


def test_a_keyring_is_made_on_first_use_and_tokens_name_their_key(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(PermissionDenied, match="no key for workspace ws1"):
        unseal_text(settings, "ws1", "k1:token")
    token = seal_text(settings, "ws1", "hunter2")
    ring = keyring(settings, "ws1", create=False)
    assert key_id_of(token) == ring.current and len(ring.keys) == 1
    assert unseal_text(settings, "ws1", token) == "hunter2"
    path = tmp_path / "keys" / "ws1.keyring"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "hunter2" not in path.read_text()
    assert unseal(settings, "ws1", seal(settings, "ws1", {"a": "b"})) == {"a": "b"}
    with pytest.raises(CairnError, match="do not open"):
        unseal_text(settings, "ws1", f"{ring.current}:gAAAAAforged")


def test_the_single_key_file_of_before_until_a_rotation_drops_it(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "keys").mkdir()
    old = Fernet.generate_key()
    (tmp_path / "keys" / "ws1.key").write_bytes(old)
    bare = Fernet(old).encrypt(b'{"secret_access_key": "s"}').decode()  # sealed before keyrings
    assert unseal(settings, "ws1", bare) == {"secret_access_key": "s"}
    token = seal_text(settings, "ws1", "v")
    assert key_id_of(token) == LEGACY_KEY_ID and key_id_of(bare) is None

    new, previous = add_key(settings, "ws1")
    assert previous == [LEGACY_KEY_ID] and keyring(settings, "ws1").current == new
    assert unseal(settings, "ws1", bare) == {"secret_access_key": "s"}  # old keys still open
    assert unseal_text(settings, "ws1", token) == "v"
    fresh = seal_text(settings, "ws1", "w")
    assert key_id_of(fresh) == new

    assert drop_keys(settings, "ws1", new) == [LEGACY_KEY_ID]
    assert not (tmp_path / "keys" / "ws1.key").exists()
    assert set(keyring(settings, "ws1").keys) == {new}
    with pytest.raises(CairnError, match="sealed under workspace key legacy"):
        unseal_text(settings, "ws1", token)
    with pytest.raises(CairnError, match="do not open"):
        unseal(settings, "ws1", bare)
    assert unseal_text(settings, "ws1", fresh) == "w"
    with pytest.raises(CairnError, match="no longer"):
        drop_keys(settings, "ws1", LEGACY_KEY_ID)


async def test_a_new_key_waits_for_values_sealed_under_the_old_one_to_be_stored(
    settings: Settings,
) -> None:
    """A value is sealed and its event stored under ``sealing``; a rotation's new key waits
    for it, so that the rotation's re-seal pass, which follows, finds the value (stored
    after it, a value under a key the rotation then drops could never be opened)."""
    old = keyring(settings, "ws1").current
    async with sealing(settings, "ws1"):
        token = seal_text(settings, "ws1", "in flight")
        adding = asyncio.ensure_future(asyncio.to_thread(add_key, settings, "ws1"))
        async with sealing(settings, "ws1"):  # shared: other values are sealed meanwhile
            assert key_id_of(seal_text(settings, "ws1", "beside it")) == old
        await asyncio.sleep(0.3)
        assert not adding.done() and keyring(settings, "ws1").current == old
    new, previous = await asyncio.wait_for(adding, 10)
    assert previous == [old] and keyring(settings, "ws1").current == new
    assert key_id_of(token) == old and unseal_text(settings, "ws1", token) == "in flight"


async def test_a_wait_for_the_key_lock_given_up_leaves_no_lock_behind(settings: Settings) -> None:
    """A request that waits to seal while a rotation holds the keys, then is cancelled (its
    caller gone, the service stopping): when the rotation lets go, the wait takes nothing,
    and the next rotation is not blocked by a lock nobody holds any more."""
    keyring(settings, "ws1")
    exclusive = _lock(settings, "ws1", fcntl.LOCK_EX)  # a rotation adding its key
    waiting = asyncio.ensure_future(sealing(settings, "ws1").__aenter__())
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    os.close(exclusive)
    await asyncio.sleep(0.2)  # the waiting thread got the lock meanwhile, and let it go
    new, _ = await asyncio.wait_for(asyncio.to_thread(add_key, settings, "ws1"), 5)
    assert keyring(settings, "ws1").current == new
