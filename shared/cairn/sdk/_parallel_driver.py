"""What a ``ParallelRunStep``'s jobs run: ``python -m cairn.sdk._parallel_driver worker ...``
on each worker, ``... gather ...`` on the step that writes the output.

A worker reads the step's input (its agent's copy), sends the split it makes of it
(``parallel.prepare``: the first one recorded is everyone's), imports the entry script, calls
its ``init()`` once, then takes mini-batches one at a time (``parallel.take``), calls
``run(mini_batch)`` on each (a ``pandas.DataFrame`` of rows for a tabular dataset, a list of
file paths for a file dataset) and commits the result (``parallel.commit``), until every
mini-batch is committed; then ``shutdown()`` if the script has one. ``run`` is tried
``run_max_try`` times, each bounded by ``run_invocation_timeout``; items it returns no result
for are failed items, and a mini-batch whose every try raised fails all its items. While a
mini-batch runs, ``CAIRN_MINI_BATCH_ID`` and ``CAIRN_MINI_BATCH_DELIVERY`` (how many times it
was handed out) are set.

The gather step reads the committed rows in mini-batch order and writes them, one line each,
to the step's output (``append_row``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from cairn.errors import CairnError, InvalidInput, StaleAttempt
from cairn.proto.parallel import (
    CommitMiniBatch,
    FailureLimits,
    GetParallelRun,
    PrepareMiniBatches,
    TakeMiniBatch,
    parallel_run_id,
)
from cairn.sdk._async_parallel import parallel_page, send_worker
from cairn.sdk._session import new_id
from cairn.sdk._sync import Run, Workspace

__all__ = ["main", "parse_size", "split"]

log = logging.getLogger("cairn.parallel")
_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def parse_size(text: str) -> int:
    """``"10MB"`` as bytes (B, KB, MB, GB; a bare number is bytes)."""
    raw = text.strip().upper()
    number = raw.rstrip("KMGB ")
    unit = raw[len(number) :].strip()
    try:
        value = float(number)
    except ValueError:
        raise InvalidInput(f"mini_batch_size {text!r}: not a size such as '1MB'") from None
    if unit not in _UNITS or value <= 0:
        raise InvalidInput(f"mini_batch_size {text!r}: a positive size in B, KB, MB or GB")
    return int(value * _UNITS[unit])


def split(sizes: list[int], count: int | None, max_bytes: int | None) -> list[int]:
    """Where each mini-batch starts: every ``count`` items, or as many items as fit in
    ``max_bytes`` (at least one)."""
    if count is not None:
        return list(range(0, len(sizes), count)) or [0]
    assert max_bytes is not None
    starts, used = [0], 0
    for i, size in enumerate(sizes):
        if used and used + size > max_bytes:
            starts.append(i)
            used = 0
        used += size
    return starts


class _Input:
    """The step's input as items: rows of a table or files."""

    def __init__(self, run: Run, name: str, kind: str) -> None:
        dataset = run.input_datasets[name]
        self.kind = kind
        self.rows: Any = None
        self.files: list[str] = []
        digest = hashlib.sha256()
        if kind == "tabular":
            pd: Any = importlib.import_module("pandas")  # optional, without type stubs
            self.rows = dataset.to_pandas_dataframe()
            self.sizes = [
                sum(len(str(v)) + 1 for v in row) for row in self.rows.itertuples(index=False)
            ]
            digest.update(pd.util.hash_pandas_object(self.rows, index=True).values.tobytes())
        else:
            if isinstance(dataset, str):  # a folder or file input: its files
                folder = Path(dataset)
                found = [folder] if folder.is_file() else folder.rglob("*")
                self.files = sorted(str(p) for p in found if p.is_file())
                folder = folder.parent if folder.is_file() else folder
            else:
                folder = Path(tempfile.mkdtemp(prefix="cairn-parallel-"))
                self.files = sorted(dataset.download(folder))
            self.sizes = [os.path.getsize(f) for f in self.files]
            for f in self.files:
                digest.update(f"{Path(f).relative_to(folder)}\x1f{os.path.getsize(f)}\n".encode())
                digest.update(hashlib.sha256(Path(f).read_bytes()).digest())
        self.digest = digest.hexdigest()

    def batch(self, start: int, end: int) -> Any:
        if self.kind == "tabular":
            return self.rows.iloc[start:end]
        return self.files[start:end]


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ws = Workspace()
        run = Run.get_context(allow_offline=False)
        assert isinstance(run, Run)
        self.run: Run = run
        self.run_id = os.environ["CAIRN_RUN_ID"]
        self.attempt = int(os.environ.get("CAIRN_ATTEMPT", "1"))

    def send(self, command: PrepareMiniBatches | TakeMiniBatch | CommitMiniBatch) -> Any:
        return self.ws._run(send_worker(self.ws.core, command))

    def _ids(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "attempt": self.attempt, "step": self.args.step}

    def prepare(self, data: _Input) -> None:
        a = self.args
        size = a.mini_batch_size
        count = int(size) if size.isdigit() else None
        starts = split(data.sizes, count, None if count else parse_size(size))
        limits = FailureLimits(
            error_threshold=a.error_threshold,
            allowed_failed_count=a.allowed_failed_count,
            allowed_failed_percent=a.allowed_failed_percent,
        )
        self.send(
            PrepareMiniBatches(
                command_id=new_id(),
                kind=a.kind,
                items=len(data.sizes),
                starts=starts,
                digest=data.digest,
                limits=limits,
                **self._ids(),
            )
        )

    def work(self) -> int:
        a = self.args
        data = _Input(self.run, a.input, a.kind)
        self.prepare(data)
        script = _load(Path(a.entry_script), a.script_args)
        if hasattr(script, "init"):
            script.init()
        pause = 0.1
        while True:
            got = self.send(TakeMiniBatch(command_id=new_id(), **self._ids()))
            if got.get("aborted"):
                print(f"parallel run aborted: {got['aborted']}", file=sys.stderr, flush=True)
                return 1
            if got["batch"] is None:
                if got["done"]:
                    break
                time.sleep(pause)  # the last mini-batches are held by live workers
                pause = min(pause * 2, 1.0)
                continue
            pause = 0.1
            batch, start, end = got["batch"], got["start"], got["end"]
            os.environ["CAIRN_MINI_BATCH_ID"] = str(batch)
            os.environ["CAIRN_MINI_BATCH_DELIVERY"] = str(got["delivery"])
            rows, failed, error = self.score(script, data.batch(start, end), end - start)
            reply = self.send(
                CommitMiniBatch(
                    command_id=new_id(),
                    batch=batch,
                    rows=rows if a.output_action == "append_row" else [],
                    failed_items=failed,
                    error=error,
                    **self._ids(),
                )
            )
            if reply.get("aborted"):
                print(f"parallel run aborted: {reply['aborted']}", file=sys.stderr, flush=True)
                return 1
        if hasattr(script, "shutdown"):
            script.shutdown()
        return 0

    def score(self, script: ModuleType, mini_batch: Any, items: int) -> tuple[list[str], int, str]:
        """``run(mini_batch)``'s rows, failed items and error (tried ``run_max_try`` times)."""
        error = ""
        for _ in range(self.args.run_max_try):
            try:
                with _time_limit(self.args.run_invocation_timeout):
                    result = script.run(mini_batch)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:2000]
                log.warning("run() failed: %s", error)
                continue
            rows = _rows(result)
            return rows, max(items - len(rows), 0), ""
        return [], items, error


def _rows(result: Any) -> list[str]:
    if result is None:
        return []
    if hasattr(result, "to_csv"):  # a DataFrame: each row, its values apart by spaces
        text: str = result.to_csv(index=False, header=False, sep=" ")
        return text.splitlines()
    return [str(item).replace("\n", " ") for item in result]


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"run() took longer than run_invocation_timeout ({seconds} s)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _load(path: Path, script_args: list[str]) -> ModuleType:
    if not path.is_file():
        raise InvalidInput(f"entry_script {str(path)!r} is not in the step's source directory")
    sys.path.insert(0, str(path.parent.resolve()))
    sys.argv = [str(path), *script_args]
    spec = importlib.util.spec_from_file_location("entry_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["entry_script"] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise InvalidInput(f"entry_script {str(path)!r} has no run(mini_batch)")
    return module


def gather(args: argparse.Namespace) -> int:
    ws = Workspace()
    run = Run.get_context(allow_offline=False)
    assert isinstance(run, Run)
    parent = run.parent
    if parent is None:
        raise InvalidInput("a parallel run's gather step runs inside a pipeline")
    pid = parallel_run_id(parent.id, args.step)
    folder = Path(args.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / args.file_name
    start: int | None = 0
    with target.open("w") if args.output_action == "append_row" else open(os.devnull, "w") as out:
        while start is not None:
            query = GetParallelRun(parallel_id=pid, from_batch=start)
            data = ws._run(parallel_page(ws.core, query))
            if data["aborted"]:
                print(f"parallel run aborted: {data['aborted']}", file=sys.stderr)
                return 1
            if not data["done"]:
                print("parallel run: not every mini-batch is committed", file=sys.stderr)
                return 1
            out.writelines(row + "\n" for row in data["rows"])
            start = data["next_batch"]
    print(
        f"parallel run {pid}: {data['items']} items in {data['batches']} mini-batches,"
        f" {data['failed_items']} failed items, {data['failed_batches']} failed mini-batches",
        flush=True,
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cairn.sdk._parallel_driver")
    sub = p.add_subparsers(dest="role", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--step", required=True)
    w.add_argument("--entry-script", required=True)
    w.add_argument("--input", required=True)
    w.add_argument("--kind", choices=["tabular", "file"], required=True)
    w.add_argument("--mini-batch-size", required=True)
    w.add_argument("--output-action", required=True)
    w.add_argument("--error-threshold", type=int, default=-1)
    w.add_argument("--allowed-failed-count", type=int, default=None)
    w.add_argument("--allowed-failed-percent", type=float, default=None)
    w.add_argument("--run-invocation-timeout", type=float, default=60.0)
    w.add_argument("--run-max-try", type=int, default=3)
    w.add_argument("--logging-level", default="INFO")
    w.add_argument("script_args", nargs=argparse.REMAINDER)
    g = sub.add_parser("gather")
    g.add_argument("--step", required=True)
    g.add_argument("--output-dir", required=True)
    g.add_argument("--file-name", required=True)
    g.add_argument("--output-action", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.role == "gather":
        return gather(args)
    logging.basicConfig(level=args.logging_level)
    if args.script_args[:1] == ["--"]:
        args.script_args = args.script_args[1:]
    try:
        return Worker(args).work()
    except StaleAttempt as exc:  # this attempt was given up on: another one carries on
        print(f"parallel worker stopped: {exc}", file=sys.stderr, flush=True)
        return 1
    except CairnError as exc:
        print(f"parallel worker failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
