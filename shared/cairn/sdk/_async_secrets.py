"""The async core of workspace secrets (``ws.secrets``; Azure ML v1's ``Keyvault`` wraps it).

A value goes out in ``SetSecret`` and comes back in the reply to ``ReadSecret``, a command: the
registry records the read (who, which version, from which run) before it answers. Names and
values are checked here first, as the registry checks them, so a bad one fails before any
round trip; no error quotes a value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from cairn.errors import CairnError
from cairn.proto.commands import Accepted, QueryResult
from cairn.proto.secrets import (
    DeleteSecret,
    ListSecrets,
    ReadSecret,
    RotateWorkspaceKey,
    SetSecret,
    check_secret_name,
    check_secret_value,
)
from cairn.sdk._session import Session, new_id

__all__ = ["AsyncSecrets"]

#: reads of one ``get_secrets`` in flight at once
_READS_AT_ONCE = 8


class AsyncSecrets:
    """``ws.secrets``: every call is one registry command or query."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def set(self, name: str, value: str) -> Accepted:
        """Store ``value`` as the next version of secret ``name`` (sealed by the registry)."""
        cmd = SetSecret(
            command_id=new_id(), name=check_secret_name(name), value=check_secret_value(value)
        )
        return await self._session.send(cmd)

    async def set_many(self, secrets: dict[str, str]) -> None:
        """Set each of ``secrets`` (all checked before the first is sent)."""
        for name, value in secrets.items():
            check_secret_name(name)
            check_secret_value(value)
        for name, value in secrets.items():
            await self.set(name, value)

    async def get(self, name: str, *, run_id: str | None = None) -> str:
        """The current value of secret ``name``; the read is recorded (from ``run_id``)."""
        return str((await self.read(name, run_id=run_id))["value"])

    async def read(self, name: str, *, run_id: str | None = None) -> dict[str, Any]:
        """``{"name", "version", "value"}`` of secret ``name``, once the read is recorded."""
        cmd = ReadSecret(command_id=new_id(), name=check_secret_name(name), run_id=run_id)
        reply = await self._session.client.send_any(cmd)
        if not isinstance(reply, QueryResult):
            raise CairnError(f"unexpected reply {type(reply).__name__} to {cmd.VERB}")
        self._session.saw_seq(reply.seq)
        data: dict[str, Any] = reply.data
        return data

    async def get_many(self, names: Iterable[str], *, run_id: str | None = None) -> dict[str, str]:
        """Each of ``names`` and its value (every read recorded); the first refusal raises."""
        wanted = [check_secret_name(n) for n in dict.fromkeys(names)]
        slots = asyncio.Semaphore(_READS_AT_ONCE)

        async def one(name: str) -> str:
            async with slots:
                return await self.get(name, run_id=run_id)

        values = await asyncio.gather(*(one(n) for n in wanted))
        return dict(zip(wanted, values, strict=True))

    async def list(self) -> list[dict[str, Any]]:
        """Every live secret: name, version, key id, when and by whom it was last set and
        read. Never a value."""
        q = ListSecrets(min_seq=self._session.seen_seq)
        rows: list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows

    async def delete(self, name: str) -> None:
        await self._session.send(DeleteSecret(command_id=new_id(), name=check_secret_name(name)))

    async def rotate_key(self, *, keep_old_keys: bool = False) -> Accepted:
        """Make a new workspace key current, re-seal every secret and datastore credential
        under it, then drop the old keys (unless ``keep_old_keys``)."""
        return await self._session.send(
            RotateWorkspaceKey(command_id=new_id(), keep_old_keys=keep_old_keys)
        )
