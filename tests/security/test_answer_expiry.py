"""An agent answers a request under the server's reply permission (``allow_responses``),
which expires: it must last as long as a deployment's longest ``request_timeout_s`` (and
the gateway's second beyond it), or a late answer is refused by the server, silently, and
its caller gets a 504 that blames ``run()``. The server's default is 2 minutes."""

from __future__ import annotations

import re

from cairn.embedded._auth import ANSWER_EXPIRES_S, _agent
from cairn.proto.serving import MAX_REQUEST_TIMEOUT_S
from cairn.serving import MAX_ANSWER_CHUNKS


def test_an_agents_answers_may_come_as_late_as_the_longest_request_timeout() -> None:
    found = re.search(r"allow_responses: \{max: (\d+), expires: \"([0-9.]+)s\"\}", _agent("pw"))
    assert found is not None
    assert int(found[1]) == MAX_ANSWER_CHUNKS
    assert float(found[2]) == ANSWER_EXPIRES_S
    assert ANSWER_EXPIRES_S > MAX_REQUEST_TIMEOUT_S + 1  # the gateway waits a second more
