"""Which Python versions a job may pin: those the live agents of its compute target advertise
(each lists the CPython interpreters ``uv`` finds on its machine and, where its
``python_downloads`` is on, those it can download). A submit that pins another is refused
before it is queued, naming the closest one, instead of failing when an agent builds its
environment. While no agent of the target is live (a job may wait for one) the scheduler's
own machine stands in, as it does for agents too old to advertise.

The agents' keys are read at most every ``_KEEP_S``, this machine's list once a minute."""

from __future__ import annotations

import asyncio
import time

from cairn.bus import Connection, live_agents
from cairn.domain.environment import closest_python, python_pin
from cairn.errors import InvalidInput
from cairn.proto.assets import EnvironmentSpec
from cairn.pythons import dotted, listed_pythons, parse_dotted

__all__ = ["Pythons"]

_KEEP_S = 60.0
_AGENTS_KEEP_S = 2.0


class Pythons:
    """The Python versions jobs may pin on each compute target."""

    def __init__(self, conn: Connection, *, downloads: bool) -> None:
        self.conn = conn
        self.downloads = downloads
        self._read: tuple[float, list[tuple[int, int]]] = (-_KEEP_S, [])
        self._agents: dict[str, tuple[float, dict[str, list[tuple[int, int]]]]] = {}
        self._lock = asyncio.Lock()

    async def here(self) -> list[tuple[int, int]]:
        """What ``uv`` has (or can download) on the scheduler's machine."""
        async with self._lock:
            made, versions = self._read
            if time.monotonic() - made > _KEEP_S:
                versions = await asyncio.to_thread(listed_pythons, self.downloads)
                self._read = (time.monotonic(), versions)
            return versions

    async def advertised(self, ws: str) -> dict[str, list[tuple[int, int]]]:
        """Per compute target, the versions its live agents advertise together."""
        made, by_compute = self._agents.get(ws, (-_AGENTS_KEEP_S, {}))
        if time.monotonic() - made > _AGENTS_KEEP_S:
            by_compute = {}
            for agent in await live_agents(self.conn, ws):
                listed = agent.get("pythons")
                if not isinstance(listed, list) or not listed:
                    continue  # an agent from before agents said, or whose uv could not say
                found = {
                    v for text in listed if isinstance(text, str) and (v := parse_dotted(text))
                }
                merged = set(by_compute.get(str(agent.get("compute")), [])) | found
                by_compute[str(agent.get("compute"))] = sorted(merged)
            self._agents[ws] = (time.monotonic(), by_compute)
        return by_compute

    async def check(self, spec: EnvironmentSpec, ws: str, compute: str) -> None:
        """Refuse ``spec`` when it pins a Python that ``compute``'s agents cannot give (an
        ``InvalidInput`` naming the version and the closest that exists)."""
        wanted = python_pin(spec)
        if wanted is None or spec.user_managed:
            return
        by_agents = (await self.advertised(ws)).get(compute)
        if by_agents is not None:
            available, where = by_agents, f"the agents of compute target {compute!r}"
        else:
            how = "installed or downloadable" if self.downloads else "installed"
            available = await self.here()
            where = f"this machine ({how}; no agent of compute target {compute!r} is running)"
        if wanted in available:
            return
        asked = dotted(wanted)
        if not available:
            raise InvalidInput(f"python {asked} is not available: no interpreter on {where}")
        near = dotted(closest_python(wanted, available))
        raise InvalidInput(
            f"python {asked} is not available to this job; the closest is {near}"
            f" ({where}: {', '.join(map(dotted, available))})"
        )
