"""The gateway's cache of routes asked with a key: an endpoint's event drops its routes, and
an answer asked before an event is not kept (it may predate it)."""

from __future__ import annotations

from cairn.services.gateway._routes import RouteCache, route_key


def test_an_event_drops_its_endpoints_routes_only() -> None:
    cache = RouteCache(ttl_s=60)
    a, b = route_key("ws", "a", "k1", None), route_key("ws", "b", "k1", None)
    other_ws = route_key("ws2", "a", "k1", None)
    for key in (a, b, other_ws):
        cache.put(key, {"traffic": {"blue": 100}}, cache.generation)
    assert cache.get(a) == {"traffic": {"blue": 100}}
    cache.invalidate("ws", "a")
    assert cache.get(a) is None
    assert cache.get(b) is not None and cache.get(other_ws) is not None


def test_an_answer_asked_before_an_event_is_not_kept() -> None:
    cache = RouteCache(ttl_s=60)
    key = route_key("ws", "ep", "old-key", None)
    asked_at = cache.generation  # the question leaves
    cache.invalidate("ws", "ep")  # the keys are set while it is on its way
    cache.put(key, {"traffic": {"blue": 100}}, asked_at)  # the answer, from before
    assert cache.get(key) is None
    cache.put(key, {"traffic": {"blue": 100}}, cache.generation)
    assert cache.get(key) is not None


def test_keys_differ_by_key_and_named_deployment_and_nothing_is_kept_at_ttl_zero() -> None:
    cache = RouteCache(ttl_s=60)
    cache.put(route_key("ws", "ep", "k1", None), {"n": 1}, cache.generation)
    assert cache.get(route_key("ws", "ep", "k2", None)) is None
    assert cache.get(route_key("ws", "ep", "k1", "blue")) is None
    assert "k1" not in repr(route_key("ws", "ep", "k1", None))  # the key's digest, not the key
    off = RouteCache(ttl_s=0)
    off.put(route_key("ws", "ep", "k1", None), {"n": 1}, off.generation)
    assert off.get(route_key("ws", "ep", "k1", None)) is None and len(off) == 0
