"""The event store: the one append path and aggregate reads, over the EVENTS stream.

Append maps JetStream outcomes to Cairn errors (see ``docs/design.md``):

======================================  ===============================================
JetStream                               Cairn
======================================  ===============================================
PubAck (``duplicate`` true or false)    success
err 10071 / 10164 (wrong last seq)      ``ConcurrencyConflict`` (the caller reloads)
err 10201 (batch repeats a msg id)      ``ConcurrencyConflict`` (same: reload, look up)
err 10158 / 10008 / timeout / no reply  retried with the same ids, then ``Unavailable``
                                        (a read answered 10008 or 10158: ``Unavailable``)
timeout after a permissions violation   ``PermissionDenied``
err 10054 or encoded size over limit    ``PayloadTooLarge`` (checked before publishing)
other batch errors                      ``BatchRejected``
======================================  ===============================================
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
from nats.errors import Error as NatsError

from cairn.bus._connect import Connection, LinkLost
from cairn.errors import (
    BatchRejected,
    CairnError,
    ConcurrencyConflict,
    InvalidInput,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
)
from cairn.proto.events import Envelope, Event, decode_envelope, encode_envelope
from cairn.proto.streams import EVENTS, STREAMS

__all__ = [
    "AppendResult",
    "EventStore",
    "Recorded",
    "Stored",
    "permission_denied",
    "stored_time",
]

_CONFLICT = {10071, 10164, 10201}
#: answers that mean "not now": the same message may be sent again after a pause
_IN_PROCESS = 10158
_TOO_MANY_BATCHES = 10210  # the server's limit of atomic batches in flight per stream
#: "JetStream system temporarily unavailable": a server that knows no leader now (one cut off
#: from its cluster's majority, or during an election)
_CLUSTER_UNAVAILABLE = 10008
_BUSY = {_IN_PROCESS, _TOO_MANY_BATCHES, _CLUSTER_UNAVAILABLE}
_TOO_LARGE = 10054
_PERMISSION = 10057
_HEADER_ALLOWANCE = 512
#: failures after which the same message may be sent again: nothing or the same thing stored
TRANSIENT = (NatsError, ConnectionError, asyncio.TimeoutError)
#: an append's transient failures are retried for at least this long: past nats-server's RAFT
#: election window (4-9 s after a leader is lost, fixed in its code), so that a command spans
#: an election instead of failing in it
_RETRY_FOR_S = 12.0
#: the pause between those retries doubles up to this: once the new leader is elected, the
#: next retry is at most this far off
_RETRY_PAUSE_MAX_S = 0.25
#: an append unanswered this long is sent again (the same ids: a duplicate if the first was
#: stored), doubling up to ``request_timeout``: one sent to a leader just killed has no
#: answer coming, and the next attempt must not wait out the whole request timeout
_ATTEMPT_TIMEOUT_S = 2.0


def permission_denied(conn: Connection, *fragments: str) -> PermissionDenied | None:
    """How the store reads a failed request (a timeout, a transport error): as a refusal when
    the server reported a permissions violation on a subject that contains one of
    ``fragments`` (an exact subject, or a part such as ``.CONSUMER.CREATE.EVENTS``), so the
    failure names its cause instead of passing for "try again later"; None otherwise."""
    for fragment in fragments:
        subject = conn.denied_matching(fragment)
        if subject is not None:
            return PermissionDenied(f"not allowed to publish to {subject}")
    return None


class Recorded(NamedTuple):
    """An event as stored: its stream sequence, subject and decoded envelope."""

    seq: int
    subject: str
    envelope: Envelope[Event]


class Stored(NamedTuple):
    """A message as the stream holds it: sequence, subject, when the server stored it, its
    bytes, and the ``Nats-Msg-Id`` it was published with ("" when none)."""

    seq: int
    subject: str
    time: datetime | None
    data: bytes
    msg_id: str = ""


def stored_time(text: str) -> datetime | None:
    """The server's RFC 3339 time of a stored message (nanoseconds cut to microseconds), or
    ``None`` when it is missing or malformed."""
    whole, _, rest = text.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    except ValueError:
        return None
    digits = "".join(itertools.takewhile(str.isdigit, rest))
    return moment + timedelta(microseconds=int(digits[:6].ljust(6, "0"))) if digits else moment


class AppendResult(NamedTuple):
    seq: int
    duplicate: bool


def _raise_for(error: dict[str, Any], subject: str) -> None:
    code = int(error.get("err_code", 0))
    text = f"{error.get('description', 'error')} (err {code}) on {subject}"
    if code in _CONFLICT:
        raise ConcurrencyConflict(text)
    if code == _TOO_LARGE:
        raise PayloadTooLarge(text)
    if code == _PERMISSION:
        raise PermissionDenied(text)
    if code in _BUSY:  # a server without a leader now (an election): may pass later
        raise Unavailable(text)
    if 10170 <= code <= 10210:
        raise BatchRejected(text)
    raise CairnError(text)


class _DirectAnswer:
    """The messages of one batched direct get as they arrive, and ``done``: whether more
    matched after them, once the server says the batch is over (or the sequence bound is
    passed), or the error it answered with."""

    def __init__(self, up_to_seq: int | None) -> None:
        self.up_to_seq = up_to_seq
        self.got: list[Stored] = []
        self.taken = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def take(self, msg: Any) -> None:
        if self.done.done():
            return
        self.taken += 1
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            self.done.set_result(False)
        elif status == "204":
            self.done.set_result(int(headers.get("Nats-Num-Pending", "0")) > 0)
        elif status == "503":  # no responders: no replica serves direct gets now
            self.done.set_exception(Unavailable("direct get: no replica answers now"))
        elif status:
            error = CairnError(f"direct get failed: {status} {headers.get('Description')}")
            self.done.set_exception(error)
        else:
            seq = int(headers["Nats-Sequence"])
            if self.up_to_seq is not None and seq > self.up_to_seq:
                self.done.set_result(False)
                return
            when = stored_time(headers.get("Nats-Time-Stamp", ""))
            msg_id = headers.get("Nats-Msg-Id", "")
            self.got.append(Stored(seq, headers["Nats-Subject"], when, msg.data, msg_id))


class EventStore:
    """Appends to and reads from one event stream. Safe to share between tasks."""

    def __init__(
        self,
        conn: Connection,
        *,
        stream: str = EVENTS.name,
        attempts: int = 5,
        backoff_s: float = 0.05,
        retry_for_s: float = _RETRY_FOR_S,
        read_batch: int = 256,
    ) -> None:
        self.conn = conn
        self.stream = stream
        #: an append is tried at least ``attempts`` times (1: once, no retry) and, when
        #: retried at all, for at least ``retry_for_s``
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.retry_for_s = retry_for_s
        self.read_batch = read_batch
        limit = next((d.max_msg_size for d in STREAMS if d.name == stream), -1)
        limit = conn.max_payload if limit <= 0 else min(limit, conn.max_payload)
        self.max_bytes = limit - _HEADER_ALLOWANCE

    # -- append ---------------------------------------------------------------------------

    async def append(
        self,
        subject: str,
        envelopes: Sequence[Envelope[Event]],
        *,
        expected_seq: int | None,
        msg_id: str,
    ) -> AppendResult:
        """Append events to one aggregate subject, all or nothing.

        ``expected_seq`` is the aggregate's last stream sequence as the caller saw it (0: the
        subject must be empty; None: no check). ``msg_id`` is the command id; event ``i`` is
        published with ``Nats-Msg-Id: <msg_id>:<i>``, so a retry inside the duplicate window is
        answered as a duplicate rather than stored twice.
        """
        if not envelopes:
            raise ValueError("append needs at least one event")
        payloads = [encode_envelope(e) for e in envelopes]
        for payload in payloads:
            if len(payload) > self.max_bytes:
                raise PayloadTooLarge(
                    f"event of {len(payload)} bytes exceeds the {self.max_bytes} byte limit"
                )
        if len(payloads) == 1:
            return await self.publish(
                subject, payloads[0], msg_id=f"{msg_id}:0", expected_seq=expected_seq
            )
        reply = await self._retrying(
            subject,
            lambda timeout: self._publish_batch(subject, payloads, expected_seq, msg_id, timeout),
        )
        return AppendResult(seq=int(reply["seq"]), duplicate=bool(reply.get("duplicate")))

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str,
        expected_seq: int | None = None,
        expected_subject: str | None = None,
    ) -> AppendResult:
        """Store one message with a dedupe id (and optionally the subject CAS), with the same
        outcome mapping and transient retries as :meth:`append`. With ``expected_subject``
        (wildcards allowed) the CAS is against the last message on those subjects instead of
        ``subject``'s (``Nats-Expected-Last-Subject-Sequence-Subject``)."""
        if len(payload) > self.max_bytes:
            raise PayloadTooLarge(f"{len(payload)} bytes exceed the {self.max_bytes} byte limit")
        if expected_subject is not None and expected_seq is None:
            raise InvalidInput("expected_subject names the subjects of a CAS: give expected_seq")
        headers = {"Nats-Msg-Id": msg_id}
        if expected_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_seq)
            if expected_subject is not None:
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = expected_subject
        reply = await self._request(subject, payload, headers)
        return AppendResult(seq=int(reply["seq"]), duplicate=bool(reply.get("duplicate")))

    async def _request(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> dict[str, Any]:
        async def once(timeout: float) -> dict[str, Any]:
            msg = await self.conn.request(subject, payload, timeout=timeout, headers=headers)
            reply: dict[str, Any] = json.loads(msg.data)
            return reply

        return await self._retrying(subject, once)

    async def _retrying(self, subject: str, once: Any) -> dict[str, Any]:
        """Run ``once(timeout)`` until it gets an answer; transient failures retry the same
        message, at least ``attempts`` times and (when retrying at all) for ``retry_for_s``,
        after pauses that double from ``backoff_s`` up to ``_RETRY_PAUSE_MAX_S``. An attempt
        waits ``_ATTEMPT_TIMEOUT_S``, doubled after each unanswered one, up to the request
        timeout."""
        last: Exception | None = None
        started = time.monotonic()
        timeout = self.conn.settings.request_timeout
        wait_s = min(_ATTEMPT_TIMEOUT_S, timeout)
        attempt = 0
        while True:
            try:
                reply: dict[str, Any] = await once(wait_s)
            except TRANSIENT as exc:
                denied = permission_denied(self.conn, subject)
                if denied is not None:
                    raise denied from exc
                last = exc
                if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, LinkLost):
                    wait_s = min(wait_s * 2, timeout)
            else:
                error = reply.get("error")
                if not error:
                    return reply
                if int(error.get("err_code", 0)) not in _BUSY:
                    _raise_for(error, subject)
                last = CairnError(str(error))
            attempt += 1
            if attempt >= self.attempts and (
                self.attempts <= 1 or time.monotonic() - started >= self.retry_for_s
            ):
                break
            pause = min(self.backoff_s * 2 ** min(attempt - 1, 16), _RETRY_PAUSE_MAX_S)
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
        raise Unavailable(
            f"no answer from stream {self.stream} for {subject} after {attempt} attempts in"
            f" {time.monotonic() - started:.1f}s: {last!r}"
        )

    async def _publish_batch(
        self,
        subject: str,
        payloads: list[bytes],
        expected_seq: int | None,
        msg_id: str,
        timeout: float,
    ) -> dict[str, Any]:
        """An atomic batch (ADR-50): stored all together at commit, or not at all."""
        nc = self.conn.nc
        batch_id = uuid.uuid4().hex
        last = len(payloads) - 1
        reply: dict[str, Any] = {}
        for i, payload in enumerate(payloads):
            headers = {
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(i + 1),
                "Nats-Msg-Id": f"{msg_id}:{i}",
            }
            if i == 0 and expected_seq is not None:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_seq)
            if i == last:
                headers["Nats-Batch-Commit"] = "1"
            if i in (0, last):
                msg = await self.conn.request(subject, payload, timeout=timeout, headers=headers)
                reply = json.loads(msg.data) if msg.data else {}
                if "error" in reply:
                    return reply
            else:
                await nc.publish(subject, payload, headers=headers)
        return reply

    # -- read -----------------------------------------------------------------------------

    async def read(
        self,
        subject: str,
        *,
        after_seq: int = 0,
        up_to_seq: int | None = None,
        complete: bool = False,
    ) -> list[Recorded]:
        """All events of one aggregate subject after ``after_seq`` (and up to ``up_to_seq``),
        fetched with batched direct gets (ADR-31), oldest first. ``complete``: every event
        the stream leader has (:meth:`read_stored`)."""
        stored = await self.read_stored(
            subject, after_seq=after_seq, up_to_seq=up_to_seq, complete=complete
        )
        try:
            return [Recorded(m.seq, m.subject, decode_envelope(m.data)) for m in stored]
        except msgspec.DecodeError as exc:
            raise CairnError(f"undecodable event on {subject}: {exc}") from exc

    async def read_as_of(
        self, subject: str, *, up_to_seq: int | None, up_to_time: datetime | None
    ) -> list[Recorded]:
        """The events of one subject up to ``up_to_seq`` and stored (by the server's clock)
        at or before ``up_to_time``."""
        stored = await self.read_stored(subject, up_to_seq=up_to_seq)
        if up_to_time is not None:
            stored = [m for m in stored if m.time is not None and m.time <= up_to_time]
        try:
            return [Recorded(m.seq, m.subject, decode_envelope(m.data)) for m in stored]
        except msgspec.DecodeError as exc:
            raise CairnError(f"undecodable event on {subject}: {exc}") from exc

    async def read_stored(
        self,
        subject: str,
        *,
        after_seq: int = 0,
        up_to_seq: int | None = None,
        complete: bool = False,
    ) -> list[Stored]:
        """The messages of one subject as stored (not decoded), with the server's time.

        With ``up_to_seq`` (or ``complete``), every message up to that sequence (or every one
        acknowledged so far): a direct get is answered by any replica of the stream, and a
        follower may not have applied the latest writes yet (ADR-31; a batched direct get does
        not honour ``min_last_seq``). The stream leader, which has every acknowledged write,
        is asked once at the end whether another message of the subject follows (up to
        ``up_to_seq``); if one does, the read goes on from it. Without either, the read is as
        fast as the nearest replica and may miss the latest writes."""
        out: list[Stored] = []
        start = after_seq + 1
        while True:
            got, more = await self._direct_batch(subject, start, up_to_seq)
            out.extend(got)
            if got and more:
                start = got[-1].seq + 1
                continue
            if up_to_seq is None and not complete:
                return out
            start = (out[-1].seq if out else after_seq) + 1
            if up_to_seq is not None and start > up_to_seq:
                return out
            following = await self.leader_next(subject, start)
            if following is None or (up_to_seq is not None and following.seq > up_to_seq):
                return out
            out.append(following)
            start = following.seq + 1

    async def leader_next(self, subject: str, start: int) -> Stored | None:
        """The first message of ``subject`` (wildcards allowed) from ``start`` on, as the
        stream leader has it (``$JS.API.STREAM.MSG.GET``, which only the leader answers:
        every acknowledged write is there, unlike on a follower that answers a direct get),
        or None."""
        body = json.dumps({"seq": start, "next_by_subj": subject}).encode()
        try:
            msg = await self.conn.nc.request(
                f"$JS.API.STREAM.MSG.GET.{self.stream}",
                body,
                timeout=self.conn.settings.request_timeout,
            )
        except TRANSIENT as exc:
            raise Unavailable(f"the leader of {self.stream} did not answer: {exc!r}") from exc
        reply: dict[str, Any] = json.loads(msg.data)
        error = reply.get("error")
        if error:
            if int(error.get("code", 0)) == 404:
                return None
            _raise_for(error, subject)
        found = reply["message"]
        headers = base64.b64decode(found.get("hdrs") or b"").decode(errors="replace")
        msg_id = next(
            (
                line.partition(":")[2].strip()
                for line in headers.splitlines()
                if line.lower().startswith("nats-msg-id:")
            ),
            "",
        )
        return Stored(
            int(found["seq"]),
            found["subject"],
            stored_time(found.get("time", "")),
            base64.b64decode(found.get("data") or b""),
            msg_id,
        )

    async def _direct_batch(
        self, subject: str, start: int, up_to_seq: int | None
    ) -> tuple[list[Stored], bool]:
        body: dict[str, Any] = {"seq": start, "next_by_subj": subject, "batch": self.read_batch}
        return await self._direct(body, subject, up_to_seq)

    async def batch(
        self, subject_filter: str, start: int, *, limit: int, max_bytes: int | None = None
    ) -> tuple[list[Stored], bool]:
        """Up to ``limit`` messages on ``subject_filter`` (wildcards allowed) from sequence
        ``start`` on (and at most ``max_bytes`` of them), and whether more were pending."""
        body: dict[str, Any] = {"seq": start, "next_by_subj": subject_filter, "batch": limit}
        if max_bytes is not None:
            body["max_bytes"] = max_bytes
        return await self._direct(body, subject_filter)

    async def _direct(
        self, body: dict[str, Any], what: str, up_to_seq: int | None = None
    ) -> tuple[list[Stored], bool]:
        """One batched direct get (ADR-31): the messages, and whether more match after them.

        The answer's messages are taken by a callback (run in order, in the subscription's
        one task) rather than ``next_msg``, which starts a task per message: a batch of 256
        costs a quarter of the time. The wait times out only when nothing arrives for the
        request timeout, however long the whole answer takes."""
        nc, timeout = self.conn.nc, self.conn.settings.request_timeout
        answer = _DirectAnswer(up_to_seq)
        inbox = nc.new_inbox()
        try:
            sub = await nc.subscribe(inbox, cb=answer.take)
        except TRANSIENT as exc:
            raise Unavailable(f"cannot read {what}: {exc!r}") from exc
        try:
            await nc.publish(
                f"$JS.API.DIRECT.GET.{self.stream}", json.dumps(body).encode(), reply=inbox
            )
            while True:
                seen = answer.taken
                try:
                    more = await asyncio.wait_for(asyncio.shield(answer.done), timeout)
                except TimeoutError as exc:
                    if answer.taken == seen:
                        denied = permission_denied(self.conn, f"$JS.API.DIRECT.GET.{self.stream}")
                        if denied is not None:
                            raise denied from exc
                        raise Unavailable(f"direct get on {self.stream} timed out") from exc
                    continue
                return answer.got, more
        except TRANSIENT as exc:
            raise Unavailable(f"direct get on {self.stream} failed: {exc!r}") from exc
        finally:
            if not answer.done.done():
                answer.done.cancel()
            try:
                await sub.unsubscribe()
            except TRANSIENT:
                pass

    async def stored_at(self, seq: int) -> datetime | None:
        """When the server stored the message at ``seq`` (``None``: there is none)."""
        body = json.dumps({"seq": seq}).encode()
        subject = f"$JS.API.DIRECT.GET.{self.stream}"
        try:
            msg = await self.conn.nc.request(
                subject, body, timeout=self.conn.settings.request_timeout
            )
        except TRANSIENT as exc:
            raise Unavailable(f"direct get on {self.stream} failed: {exc!r}") from exc
        headers = msg.headers or {}
        if headers.get("Status"):
            return None
        return stored_time(headers.get("Nats-Time-Stamp", ""))

    async def last_seq_on(self, subject: str) -> int:
        """The sequence of the last message stored on ``subject`` (0 when there is none):
        one direct get, whatever the subject's size."""
        body = json.dumps({"last_by_subj": subject}).encode()
        try:
            msg = await self.conn.nc.request(
                f"$JS.API.DIRECT.GET.{self.stream}",
                body,
                timeout=self.conn.settings.request_timeout,
            )
        except TRANSIENT as exc:
            raise Unavailable(f"direct get on {self.stream} failed: {exc!r}") from exc
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":  # nothing stored on it
            return 0
        if status:
            raise Unavailable(f"direct get on {self.stream}: {status} {headers.get('Description')}")
        return int(headers["Nats-Sequence"])

    async def page(
        self,
        subject_filter: str,
        *,
        after_seq: int = 0,
        start_time: str | None = None,
        limit: int = 256,
    ) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` stored messages on ``subject_filter`` (wildcards allowed) after
        ``after_seq`` (or, with ``start_time``, an RFC 3339 moment, from then on), oldest
        first, undecoded: ``(seq, subject, payload)``. One batched direct get (ADR-31)."""
        body: dict[str, Any] = {"next_by_subj": subject_filter, "batch": limit}
        if start_time is not None:
            body["start_time"] = start_time
        else:
            body["seq"] = after_seq + 1
        got, _ = await self._direct(body, subject_filter)
        return [(m.seq, m.subject, m.data) for m in got]

    async def last_seq(self) -> int:
        """The stream's last sequence (0 when empty)."""
        try:
            msg = await self.conn.nc.request(
                f"$JS.API.STREAM.INFO.{self.stream}",
                b"",
                timeout=self.conn.settings.request_timeout,
            )
        except TRANSIENT as exc:
            raise Unavailable(f"stream {self.stream} did not answer: {exc!r}") from exc
        info = json.loads(msg.data)
        if "error" in info:
            _raise_for(info["error"], self.stream)
        return int(info["state"]["last_seq"])
