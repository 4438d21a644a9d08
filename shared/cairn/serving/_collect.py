"""A replica's data collector: the requests it samples, as JSON lines in its own folder.

``add()`` is called after each answer went back (the caller never waits for it): it keeps
the request's body and answer in memory, at most :data:`CAPACITY` requests; beyond that, or
when a record cannot be written, the record is dropped and counted (a record is a line: a
request collected as inputs and outputs makes two). A thread appends what was kept every
:data:`FLUSH_S` seconds to
``.collected/<collection>/<yyyy>/<mm>/<dd>/<hh>/<replica>.jsonl`` (UTC; ``rolling_rate``
``day`` drops the hour, ``minute`` adds the minute) and writes the counts to
``.collected/counts.json``; the replica's agent delivers the files to the datastore. Each
line::

    {"id": "<replica>-<n>", "time": "2026-11-30T04:51:08.123456Z", "endpoint": "...",
     "deployment": "...", "collection": "model_inputs", "data": <the request's JSON>}

``model_outputs`` lines carry ``status`` (200, or 500 when ``run()`` raised) and ``data``,
the answer. A request is sampled by its id (:func:`cairn.serving.sampled`); a body the
replica answered 400 (not JSON) is not collected. On SIGTERM (how its agent stops it) the
replica ends through ``close()``, which writes what is left, unless the entry script set a
handler of its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import threading
from collections import deque
from pathlib import Path
from typing import Any

from cairn.serving import COLLECT_ENV, COLLECT_FOLDER, ServeAnswer, ServeRequest, sampled

__all__ = ["CAPACITY", "FLUSH_S", "Collector", "collector_from_env"]

#: the records kept in memory between two writes; more are dropped (and counted)
CAPACITY = 20_000
#: seconds between two writes
FLUSH_S = 1.0
_FORMATS = {"day": "%Y/%m/%d", "hour": "%Y/%m/%d/%H", "minute": "%Y/%m/%d/%H/%M"}


class Collector:
    def __init__(
        self,
        folder: Path,
        *,
        replica: str,
        endpoint: str,
        deployment: str,
        collections: list[str],
        sampling_rate: float = 1.0,
        rolling_rate: str = "hour",
    ) -> None:
        self.folder, self.replica = folder, replica
        self.inputs = "model_inputs" in collections
        self.outputs = "model_outputs" in collections
        self.rate = sampling_rate
        self.period = _FORMATS[rolling_rate]
        self._head = f',"endpoint":{json.dumps(endpoint)},"deployment":{json.dumps(deployment)},'
        self.collected = 0
        self.dropped = 0
        self._pending: deque[tuple[str, float, bytes, int, bytes]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cairn-collector", daemon=True)

    def start(self) -> Collector:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_term)
        return self

    def add(self, request: ServeRequest, answer: ServeAnswer, received: float) -> None:
        """Keep the request for the next write, if it is sampled; never raises."""
        try:
            if answer.status == 400:
                return
            request_id = f"{self.replica}-{request.id}"
            if not sampled(request_id, self.rate):
                return
            if len(self._pending) >= CAPACITY:
                self.dropped += self.inputs + self.outputs
                return
            self._pending.append((request_id, received, request.body, answer.status, answer.body))
        except Exception:
            self.dropped += self.inputs + self.outputs

    def close(self) -> None:
        """Write what is left and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        else:
            self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Append the kept records to their files (one open per file and write)."""
        lines: dict[Path, list[str]] = {}
        taken = 0
        while self._pending:
            request_id, received, body, status, answer = self._pending.popleft()
            taken += 1
            when = dt.datetime.fromtimestamp(received, dt.UTC)
            head = (
                f'{{"id":{json.dumps(request_id)},'
                f'"time":"{when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}"{self._head}'
            )
            period = when.strftime(self.period)
            if self.inputs:
                data = body.decode(errors="replace").replace("\n", " ").replace("\r", " ")
                line = f'{head}"collection":"model_inputs","data":{data}}}\n'
                lines.setdefault(self._file("model_inputs", period), []).append(line)
            if self.outputs:
                data = answer.decode(errors="replace").replace("\n", " ").replace("\r", " ")
                line = f'{head}"collection":"model_outputs","status":{status},"data":{data}}}\n'
                lines.setdefault(self._file("model_outputs", period), []).append(line)
        written = 0
        for path, chunk in lines.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as f:
                    f.write("".join(chunk))
                written += len(chunk)
            except OSError:
                self.dropped += len(chunk)
        if taken:
            self.collected += written
            self._counts()

    def _file(self, collection: str, period: str) -> Path:
        return self.folder / collection / period / f"{self.replica}.jsonl"

    def _counts(self) -> None:
        tmp = self.folder / "counts.json.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({"collected": self.collected, "dropped": self.dropped}))
            tmp.replace(self.folder / "counts.json")


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def collector_from_env() -> Collector | None:
    """The replica's collector, started, when its deployment has one (None otherwise)."""
    raw = os.environ.get(COLLECT_ENV)
    if not raw:
        return None
    config = json.loads(raw)
    return Collector(
        Path(COLLECT_FOLDER).absolute(),
        replica=config["replica"],
        endpoint=config["endpoint"],
        deployment=config["deployment"],
        collections=config["collections"],
        sampling_rate=config["sampling_rate"],
        rolling_rate=config["rolling_rate"],
    ).start()
