"""The gateway's cache of endpoints' routes asked with a key (``endpoint.route``).

Without it every scoring request would ask the scheduler, which reads the endpoint's and its
deployments' subjects fresh from JetStream: two more crossings of processes and two stream
reads per request. An answer is kept for ``gateway_route_cache_s`` seconds (the backstop)
under (workspace, endpoint, the key's sha256, the named deployment), and dropped at once
when an event of that endpoint arrives (``cairn.ev.<ws>.endpoint.<endpoint>``: its keys set,
its traffic or mirror changed, it deleted), which the scoring user subscribes to. Only
answers are kept, never a refusal, so a new key or endpoint works from its first request.

Races: an event that arrives while a route is being asked makes that answer uncached (each
invalidation advances ``generation``, and an answer is stored only if it has not moved since
its question left). A lost link may have lost events: every entry is dropped when the link
went down or came back (``Connection.link_changed``). A deployment's own events (its time
limit, its existence) are not followed, as they carry the job's spec, which the scoring user
has no business reading: they reach a cached route within the backstop.

A member's requests (token or session) are not cached: their membership is checked by the
query over their own connection, each time.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

__all__ = ["RouteCache", "RouteKey", "route_key"]

#: (workspace, endpoint, the key's sha256, the named deployment or None)
RouteKey = tuple[str, str, str, str | None]
#: at most this many routes kept; past it the cache starts again empty (only valid keys'
#: answers are kept, so this bounds the endpoints x keys x named deployments in use)
MAX_ROUTES = 4096


def route_key(workspace: str, endpoint: str, key: str, deployment: str | None) -> RouteKey:
    return (workspace, endpoint, hashlib.sha256(key.encode()).hexdigest(), deployment)


class RouteCache:
    """Routes by ``RouteKey``, each until its deadline or its endpoint's next event."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        #: advanced by every invalidation; an answer asked before it moved is not stored
        self.generation = 0
        self._routes: dict[RouteKey, tuple[float, dict[str, Any]]] = {}

    def get(self, key: RouteKey) -> dict[str, Any] | None:
        found = self._routes.get(key)
        if found is None:
            return None
        until, route = found
        if time.monotonic() >= until:
            del self._routes[key]
            return None
        return route

    def put(self, key: RouteKey, route: dict[str, Any], generation: int) -> None:
        """Keep ``route``, asked when the cache was at ``generation``, unless an invalidation
        came since (the answer may predate the event)."""
        if self.ttl_s <= 0 or generation != self.generation:
            return
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        self._routes[key] = (time.monotonic() + self.ttl_s, route)

    def invalidate(self, workspace: str, endpoint: str) -> None:
        """Drop the endpoint's routes (an event of it arrived)."""
        self.generation += 1
        for key in [k for k in self._routes if k[0] == workspace and k[1] == endpoint]:
            del self._routes[key]

    def clear(self) -> None:
        self.generation += 1
        self._routes.clear()

    def __len__(self) -> int:
        return len(self._routes)
