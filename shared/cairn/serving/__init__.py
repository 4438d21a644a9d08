"""A serving replica's side of its agent: the entry script's ``init()`` once, then ``run()``
per request (``python -m cairn.serving score.py``; :mod:`cairn.serving._replica`).

The agent listens on ``serve.sock`` beside the job's gate socket (the folder of
``CAIRN_AGENT_SOCKET``), letting in only the replica's own process once it is launched. The
replica connects once ``init()`` has returned; that connection is its readiness. The agent
then sends each request of the deployment's queue group down it, up to
``CAIRN_SERVE_WORKERS`` at once (the deployment's ``max_concurrent_requests``), and relays
the answers, which come back in any order (matched by ``id``). Frames
are msgpack, each preceded by its length (4 bytes, big-endian), as on the gate.

A deployment with a data collector (``ReplicaSpec.data_collector``) gets it as
``CAIRN_DATA_COLLECTOR`` (JSON); the replica appends the requests it samples to JSON lines
files under ``.collected/`` in its folder (``<collection>/<yyyy>/<mm>/<dd>/<hh>/<replica>.jsonl``,
:mod:`cairn.serving._collect`), and its agent delivers them to the datastore
(``cairn.services.agent._collect``).
"""

from __future__ import annotations

import hashlib
import re
import struct

import msgspec

__all__ = [
    "COLLECTED_FILE",
    "COLLECT_ENV",
    "COLLECT_FOLDER",
    "INIT_FAILED",
    "MAX_ANSWER_BYTES",
    "MAX_ANSWER_CHUNKS",
    "MAX_FRAME_BYTES",
    "SOCKET_NAME",
    "TOKEN_ENV",
    "WORKERS_ENV",
    "ServeAnswer",
    "ServeHello",
    "ServeRequest",
    "decode",
    "encode",
    "sampled",
]

#: the socket's name in the gate's folder
SOCKET_NAME = "serve.sock"
#: the replica's exit code when ``init()`` (or importing the entry script) raised
INIT_FAILED = 3
#: the variable telling the replica how many ``run()`` calls to make at once
WORKERS_ENV = "CAIRN_SERVE_WORKERS"
#: the variable holding the token the replica's hello carries: its agent makes one per launch
#: and gives it to the replica's environment alone, so a process that merely reaches
#: ``serve.sock`` cannot pass for the replica
TOKEN_ENV = "CAIRN_SERVE_TOKEN"
#: the largest answer a replica gives (``run()``'s result as JSON); a larger one is answered
#: 500 naming this limit
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: an answer larger than a NATS message (the server's ``max_payload``) travels from the agent
#: to the gateway in at most this many messages (``Cairn-Chunk`` ``i``/``Cairn-Chunks`` ``n``
#: headers), which the gateway puts back together; the agent's NATS user may send as many
#: answers to one request
MAX_ANSWER_CHUNKS = 128
#: the largest frame either side accepts
MAX_FRAME_BYTES = MAX_ANSWER_BYTES + 1024 * 1024
LENGTH = struct.Struct(">I")
#: the variable holding a replica's data collector (JSON), when it has one
COLLECT_ENV = "CAIRN_DATA_COLLECTOR"
#: where in its folder a replica appends what it collects
COLLECT_FOLDER = ".collected"
#: the only paths under COLLECT_FOLDER its agent delivers
COLLECTED_FILE = re.compile(
    r"^(model_inputs|model_outputs)/[0-9]{4}/[0-9]{2}/[0-9]{2}(/[0-9]{2}){0,2}/[A-Za-z0-9_.-]{1,128}\.jsonl$"
)


def sampled(request_id: str, rate: float) -> bool:
    """Whether the request ``request_id`` is collected at ``rate``: the same id always gets
    the same answer (its sha256, as a fraction of 2**64, below the rate)."""
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


class ServeHello(msgspec.Struct, frozen=True, array_like=True, tag="hello"):
    """The replica's first frame: ``init()`` returned. ``token``: its launch's
    (:data:`TOKEN_ENV`)."""

    pid: int
    token: str = ""


class ServeRequest(msgspec.Struct, frozen=True, array_like=True, tag="request"):
    """One request; ``deadline`` (``time.time()``, 0: none) is when its caller gives up: a
    request still waiting for a worker then is answered 504 without calling ``run()``."""

    id: int
    body: bytes
    deadline: float = 0.0


class ServeAnswer(msgspec.Struct, frozen=True, array_like=True, tag="answer"):
    """``status`` 200 with ``run()``'s result as JSON, 400 for a body that is not JSON, 500
    with the error's message when ``run()`` raised."""

    id: int
    status: int
    body: bytes


Frame = ServeHello | ServeRequest | ServeAnswer
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode(frame: Frame) -> bytes:
    body = _encoder.encode(frame)
    return LENGTH.pack(len(body)) + body


def decode(body: bytes) -> Frame:
    return _decoder.decode(body)
