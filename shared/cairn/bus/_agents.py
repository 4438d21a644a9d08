"""The agents with a live heartbeat, as their keys in the ``cairn_agents`` bucket say (a key
expires when its agent goes quiet). People may read the bucket (``cairn agent list``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from cairn.bus._connect import Connection
from cairn.proto.streams import AGENTS_BUCKET

__all__ = ["live_agents"]


async def live_agents(conn: Connection, workspace: str) -> list[dict[str, Any]]:
    """The live agents that run ``workspace``'s jobs (an agent that does not say which
    workspace it serves counts for every one), by compute target and id."""
    from nats.js.errors import NoKeysError

    kv = await conn.js.key_value(AGENTS_BUCKET.bucket)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    found = []
    for key in keys:
        with contextlib.suppress(Exception):  # expired or deleted between keys() and get()
            entry = await kv.get(key)
            info = json.loads(entry.value) if entry.value else None
            if isinstance(info, dict) and info.get("workspace", "") in ("", workspace):
                found.append(info)
    return sorted(found, key=lambda a: (str(a.get("compute")), str(a.get("agent_id"))))
