"""The compute agent: capacity and heartbeats, jobs pulled and run."""

from __future__ import annotations

from functools import partial

from cairn.embedded._auth import embedded_agent_settings
from cairn.service import OpsAddress, serve
from cairn.services.agent._capacity import AgentInfo, Gpu, detect, detect_gpus
from cairn.services.agent._service import AgentService, list_agents
from cairn.settings import Settings

__all__ = ["AgentInfo", "AgentService", "Gpu", "detect", "detect_gpus", "list_agents", "main"]


async def main(
    settings: Settings,
    compute: str = "local",
    slots: int = 1,
    labels: list[str] | None = None,
    drain: bool = False,
    backend: str = "process",
    ops: OpsAddress | None = None,
) -> None:
    """Run one agent until SIGTERM/SIGINT (serving the ops routes on ``ops``, if given). An
    agent connects as a client: it uses the streams but may not create them."""
    factory = partial(
        AgentService, compute=compute, slots=slots, labels=labels, drain=drain, backend=backend
    )
    await serve(embedded_agent_settings(settings), factory, provision_streams=False, ops=ops)
