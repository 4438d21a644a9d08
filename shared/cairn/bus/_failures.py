"""Which failures of a JetStream request may pass by themselves (try again later) and which are
the server's refusal (say it, with its cause).

nats-py raises ``nats.js.errors.APIError`` for an answer of the JetStream API. An error the
API itself answered carries the server's ``err_code`` (nats-server's ``ErrorIdentifier``,
listed in its ``server/errors.json``) and an HTTP-like ``code``; a status the client got
instead of an answer (no responders, a request timeout) carries a ``code`` at most. When there
is an ``err_code`` it alone decides: the same ``code`` covers passing and lasting causes (503
is both "no leader now", 10008, and "JetStream not enabled for the account", 10039).
"""

from __future__ import annotations

from nats.js.errors import APIError

from cairn.bus._store import TRANSIENT

__all__ = ["TRANSIENT_ERR_CODES", "TRANSIENT_STATUS_CODES", "transient"]

#: API errors that may pass, by ``err_code``
TRANSIENT_ERR_CODES: dict[int, str] = {
    # JSClusterNotAvailErr, code 503: the server knows no leader for the request now (a
    # JetStream meta or stream group during an election, or a server cut off from its
    # cluster's majority); answered once an election is over or the majority is back
    10008: "JetStream system temporarily unavailable",
    # JSStreamNotFoundErr, code 404: asked of a stream every Cairn process provisions or waits
    # for at start, it is one that a recovering cluster (a restarted node, a new meta leader
    # still applying its log) does not know yet; a stream that is really gone keeps
    # answering it, and the caller's log says so at every try
    10059: "stream not found",
}

#: statuses that may pass, by ``code``, when there is no ``err_code``
TRANSIENT_STATUS_CODES: dict[int | None, str] = {
    # nats-py raises ``ServiceUnavailableError()`` without a code for "no responders" (no
    # server answers the API subject: JetStream starting, restarting or not reachable)
    None: "no code: no responders",
    408: "request timeout (a pull request or a direct get that expired on the server)",
    500: "a server error without an API error code",
    503: "service unavailable: no responders",
}


def transient(exc: BaseException) -> bool:
    """Whether a failed JetStream request may pass by itself: an API error whose
    ``err_code`` is one of :data:`TRANSIENT_ERR_CODES`, or without one whose ``code`` is one
    of :data:`TRANSIENT_STATUS_CODES`; any other failure of the client (a timeout, no
    responders, the connection closed or reconnecting: :data:`TRANSIENT`). Any other API
    error is the server's refusal (a bad request, a limit, a missing consumer, a permission).

    A permissions violation reaches the client as a timeout: callers that can be refused one
    ask ``permission_denied`` first."""
    if isinstance(exc, APIError):
        if exc.err_code is not None:
            return exc.err_code in TRANSIENT_ERR_CODES
        return exc.code in TRANSIENT_STATUS_CODES
    return isinstance(exc, TRANSIENT)
