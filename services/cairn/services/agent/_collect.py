"""A serving replica's collected data, delivered by its agent as a job's declared outputs are.

The replica appends what it samples to files under ``.collected/`` in its own folder
(:mod:`cairn.serving._collect`). Every ``collect_deliver_s`` (60 s; checked at the request
metrics' beat, 5 s) while it serves, and once more when its process is gone, the agent
copies the complete lines of each file that grew and writes the copy over
``modelDataCollector/<endpoint>/<deployment>/<the file's path>`` in the datastore the
deployment names (``ReplicaSpec.data_collector``), with the workspace key, as it
delivers any job's outputs (``cairn.data.upload_pairs``, each write recorded). The replica
never holds the datastore's credentials, and what it can write is bounded by its deployment:
only paths of the collector's shape (:data:`cairn.serving.COLLECTED_FILE`) under its
deployment's folder; a link, or any other file, is not delivered. Files are read without
following links, so a replica cannot have its agent read anything outside its folder.

What could not be delivered stays in the file and goes with the next delivery; what is
still undelivered when the replica ends is counted as dropped. The replica's counts are
logged as its run's metrics ``collected_records`` and ``collected_dropped`` (added up over
the run's points).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path

from cairn.data import upload_pairs
from cairn.errors import CairnError
from cairn.log import get_logger
from cairn.proto.metrics import LogMetrics, MetricPoint
from cairn.proto.serving import ReplicaSpec
from cairn.rpc import Client
from cairn.serving import COLLECT_ENV, COLLECT_FOLDER, COLLECTED_FILE
from cairn.settings import Settings

__all__ = ["COLLECTED_ROOT", "CollectedData"]

log = get_logger("cairn.agent")
#: the datastore folder every deployment's collected data lies under (Azure's)
COLLECTED_ROOT = "modelDataCollector"
_MAX_DEPTH = 8


class CollectedData:
    """One replica attempt's collected files and what of them was delivered."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        serve: ReplicaSpec,
        src: Path,
        run_id: str,
        attempt: int,
    ) -> None:
        assert serve.data_collector is not None
        self.client, self.settings, self.serve = client, settings, serve
        self.spec = serve.data_collector
        self.folder = src / COLLECT_FOLDER
        self.run_id, self.attempt = run_id, attempt
        self.replica = f"{run_id}-{attempt}"
        #: per file: the bytes of it delivered
        self.delivered: dict[str, int] = {}
        self._counted = {"collected": 0, "dropped": 0}
        self._step = 0
        self._lock = asyncio.Lock()
        self._last = time.monotonic()

    @classmethod
    def of(
        cls,
        client: Client,
        settings: Settings,
        serve: ReplicaSpec | None,
        src: Path,
        run_id: str,
        attempt: int,
    ) -> CollectedData | None:
        if serve is None or serve.data_collector is None:
            return None
        return cls(client, settings, serve, src, run_id, attempt)

    def environ(self) -> dict[str, str]:
        """What the replica's process needs to collect."""
        config = {
            "replica": self.replica,
            "endpoint": self.serve.endpoint,
            "deployment": self.serve.deployment,
            "collections": list(self.spec.collections),
            "sampling_rate": self.spec.sampling_rate,
            "rolling_rate": self.spec.rolling_rate,
        }
        return {COLLECT_ENV: json.dumps(config)}

    @property
    def prefix(self) -> str:
        return f"{COLLECTED_ROOT}/{self.serve.endpoint}/{self.serve.deployment}"

    def due(self) -> bool:
        """Whether ``collect_deliver_s`` passed since the last delivery."""
        return time.monotonic() - self._last >= self.settings.collect_deliver_s

    async def deliver(self, *, final: bool = False) -> None:
        """Write the files that grew to the datastore; never raises (a failure is logged and
        tried again next time, or, ``final``, its undelivered lines counted as dropped)."""
        async with self._lock:
            self._last = time.monotonic()
            tmp = Path(tempfile.mkdtemp(prefix="collected-"))
            try:
                grown = await asyncio.to_thread(_read_grown, self.folder, self.delivered, tmp)
                undelivered = 0
                if grown:
                    pairs = [(path, f"{self.prefix}/{rel}") for rel, path, _, _ in grown]
                    try:
                        await upload_pairs(
                            self.client,
                            self.spec.datastore,
                            pairs,
                            overwrite=True,
                            show_progress=False,
                            settings=self.settings,
                        )
                    except (CairnError, OSError) as exc:
                        log.warning(
                            "collected_delivery_failed", run_id=self.run_id, error=repr(exc)
                        )
                        undelivered = sum(lines for _, _, _, lines in grown)
                    else:
                        self.delivered.update({rel: size for rel, _, size, _ in grown})
                await self._log_counts(undelivered if final else 0)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    async def _log_counts(self, undelivered: int) -> None:
        """The replica's counts since the last look, as its run's metrics."""
        counts = await asyncio.to_thread(_counts, self.folder)
        counts["dropped"] += undelivered
        delta = {k: counts[k] - self._counted[k] for k in counts}
        if not any(delta.values()):
            return
        now = time.time()
        names = {"collected": "collected_records", "dropped": "collected_dropped"}
        points = [
            MetricPoint(name=names[key], kind="scalar", value=value, step=self._step, time=now)
            for key, value in sorted(delta.items())
        ]
        self._step += 1
        cmd = LogMetrics(
            command_id=uuid.uuid4().hex, run_id=self.run_id, points=points, attempt=self.attempt
        )
        try:
            await self.client.send(cmd)
        except CairnError as exc:  # counts are best effort
            log.warning("collected_counts_failed", run_id=self.run_id, error=exc.message)
            return
        self._counted = counts


def _counts(folder: Path) -> dict[str, int]:
    """The replica's own counts (``counts.json``), read without following a link."""
    found = {"collected": 0, "dropped": 0}
    try:
        raw = _read_nofollow(folder, ["counts.json"])
        data = json.loads(raw) if raw is not None else {}
    except (OSError, ValueError):
        return found
    for key in found:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int) and value >= 0:
            found[key] = value
    return found


def _read_nofollow(folder: Path, parts: list[str], unless_size: int = -1) -> bytes | None:
    """The file at ``folder/parts...``, opened component by component without following a
    link (None when it is not a regular file, or when its size is ``unless_size``)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds: list[int] = []
    try:
        fds.append(os.open(folder, flags | os.O_DIRECTORY))
        for part in parts[:-1]:
            fds.append(os.open(part, flags | os.O_DIRECTORY, dir_fd=fds[-1]))
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fds[-1])
        fds.append(fd)
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_size == unless_size:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    except OSError:
        return None
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _walk(folder: Path) -> list[str]:
    """The paths under ``folder`` of the collector's shape, found without following links."""
    found: list[str] = []

    def visit(fd: int, rel: str, depth: int) -> None:
        with os.scandir(fd) as entries:
            for entry in entries:
                path = f"{rel}{entry.name}"
                if entry.is_dir(follow_symlinks=False) and depth < _MAX_DEPTH:
                    try:
                        sub = os.open(
                            entry.name,
                            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                            dir_fd=fd,
                        )
                    except OSError:
                        continue
                    try:
                        visit(sub, f"{path}/", depth + 1)
                    finally:
                        os.close(sub)
                elif entry.is_file(follow_symlinks=False) and COLLECTED_FILE.match(path):
                    found.append(path)

    try:
        root = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return found
    try:
        visit(root, "", 0)
    finally:
        os.close(root)
    return sorted(found)


def _read_grown(
    folder: Path, delivered: dict[str, int], tmp: Path
) -> list[tuple[str, Path, int, int]]:
    """Each collected file whose complete lines grew since its last delivery, copied into
    ``tmp``: (its path under the folder, the copy, the bytes copied, the new lines)."""
    grown = []
    for i, rel in enumerate(_walk(folder)):
        data = _read_nofollow(folder, rel.split("/"), unless_size=delivered.get(rel, -1))
        if data is None:
            continue
        size = data.rfind(b"\n") + 1  # a line being written waits for the next delivery
        if size <= delivered.get(rel, 0):
            continue
        copy = tmp / f"{i}.jsonl"
        copy.write_bytes(data[:size])
        grown.append((rel, copy, size, data.count(b"\n", delivered.get(rel, 0), size)))
    return grown
