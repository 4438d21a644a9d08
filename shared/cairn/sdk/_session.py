"""What every part of the async core shares: the connection, the workspace's RPC client, and
the highest stream sequences this client caused, which its queries wait for (read your own
writes)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cairn.bus import Connection
from cairn.errors import InvalidInput, NotFound
from cairn.proto.commands import Accepted, Command, CreateExperiment, ListWorkspaces
from cairn.rpc import Client
from cairn.settings import Settings

__all__ = ["Session", "as_of_fields", "new_id"]


def new_id() -> str:
    return uuid.uuid4().hex


class Session:
    def __init__(self, conn: Connection, name: str, settings: Settings | None = None) -> None:
        self.conn = conn
        self.name = name
        #: this process's settings: its home (spool) and the key that opens datastores
        self.settings = settings or conn.settings
        self.client = Client(conn, name)
        #: highest EVENTS / METRICS sequences this client caused; its queries wait for them
        self.seen_seq = 0
        self.seen_metrics_seq = 0
        #: snapshot digests this client knows are uploaded (they are never deleted)
        self.snapshots: set[str] = set()
        self._experiments: dict[str, str] = {}

    def saw(self, reply: Accepted | None, *, metrics: bool = False) -> None:
        if reply is None:
            return
        if metrics:
            self.seen_metrics_seq = max(self.seen_metrics_seq, reply.seq)
        else:
            self.saw_seq(reply.seq)

    def saw_seq(self, seq: int) -> None:
        self.seen_seq = max(self.seen_seq, seq)

    async def default_datastore(self) -> str:
        """The workspace's default datastore (``ws.set_default_datastore``)."""
        rows = (await self.client.ask(ListWorkspaces(min_seq=self.seen_seq))).data
        for row in rows:
            if row["name"] == self.name:
                return str(row["default_datastore"])
        raise NotFound(f"workspace {self.name} is not one of yours")

    async def send(self, command: Command) -> Accepted:
        """Send one command and remember the sequence of its event."""
        reply = await self.client.send(command)
        self.saw(reply)
        return reply

    async def experiment_id(self, name: str) -> str:
        """Get or create the experiment called ``name`` (experiments are never deleted, so
        one this client has seen is not asked for again)."""
        known = self._experiments.get(name)
        if known is None:
            reply = await self.send(CreateExperiment(command_id=new_id(), name=name))
            known = self._experiments[name] = reply.aggregate_id
        return known


def as_of_fields(as_of: datetime | int | None) -> dict[str, Any]:
    """A query's ``as_of_seq`` or ``as_of_time`` from an SDK's ``as_of=``: a stream sequence
    (an ``int``, 1 or more) or a time (a ``datetime``; without a zone, local time)."""
    if as_of is None:
        return {}
    if isinstance(as_of, datetime):
        return {"as_of_time": as_of.astimezone(UTC)}
    if isinstance(as_of, int) and not isinstance(as_of, bool):
        if as_of < 1:
            raise InvalidInput(f"as_of={as_of}: a stream sequence is 1 or more")
        return {"as_of_seq": as_of}
    raise InvalidInput(
        f"as_of takes a datetime or a stream sequence (an int), not {type(as_of).__name__}"
    )
