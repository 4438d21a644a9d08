"""The compute agent, as far as it goes today: it registers its capacity and heartbeats into
the ``cairn_agents`` bucket (a key per agent, expiring when the agent goes quiet). Pulling and
running jobs comes with the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import msgspec

from cairn.bus import Connection
from cairn.log import get_logger
from cairn.proto.streams import AGENTS_BUCKET
from cairn.proto.subjects import agent_key, validate_token
from cairn.services.agent._capacity import AgentInfo, detect
from cairn.settings import Settings

__all__ = ["AgentService", "list_agents"]

log = get_logger("cairn.agent")
_encoder = msgspec.json.Encoder()


class AgentService:
    name = "agent"

    def __init__(
        self,
        conn: Connection,
        settings: Settings,
        *,
        compute: str = "local",
        slots: int = 1,
        labels: list[str] | None = None,
        agent_id: str | None = None,
    ) -> None:
        self.conn = conn
        self.compute = validate_token(compute, "compute")
        self.slots = slots
        self.labels = [validate_token(label, "label") for label in labels or []]
        self.agent_id = agent_key(agent_id or f"{self.compute}-{uuid.uuid4().hex[:12]}")
        self.interval_s = float(AGENTS_BUCKET["ttl_s"]) / 3
        self.started_at = time.time()
        self.info: AgentInfo | None = None
        self._kv: object = None

    async def heartbeat(self) -> AgentInfo:
        """Write the agent's key (capacity, free slots, time); the bucket's TTL drops it if
        heartbeats stop."""
        if self._kv is None:
            self._kv = await self.conn.js.key_value(AGENTS_BUCKET["bucket"])
        self.info = detect(self.agent_id, self.compute, self.slots, self.labels,
                           self.started_at, time.time())  # fmt: skip
        await self._kv.put(self.agent_id, _encoder.encode(self.info))  # type: ignore[attr-defined]
        return self.info

    async def start(self) -> None:
        info = await self.heartbeat()
        log.info("agent_registered", agent_id=self.agent_id, compute=self.compute,
                 gpus=len(info.gpus), labels=info.labels)  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
            if not stop.is_set():
                try:
                    await self.heartbeat()
                except Exception as exc:  # the bus may be away; the next beat tries again
                    log.warning("heartbeat_failed", error=str(exc))
        with contextlib.suppress(Exception):  # leaving: say so rather than wait for the TTL
            await self._kv.delete(self.agent_id)  # type: ignore[attr-defined]


async def list_agents(conn: Connection) -> list[AgentInfo]:
    """Every agent whose key has not expired."""
    from nats.js.errors import NoKeysError

    kv = await conn.js.key_value(AGENTS_BUCKET["bucket"])
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out = []
    for key in keys:
        with contextlib.suppress(Exception):  # expired or deleted between keys() and get()
            entry = await kv.get(key)
            if entry.value:
                out.append(msgspec.json.decode(entry.value, type=AgentInfo))
    return sorted(out, key=lambda a: (a.compute, a.agent_id))
