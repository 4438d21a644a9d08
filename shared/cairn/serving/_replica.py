"""The replica's loop: load the entry script, call ``init()`` once, connect to the agent
(readiness), then answer each request with ``run(raw_json_str)``, in a pool of
``CAIRN_SERVE_WORKERS`` threads (1 by default: one ``run()`` at a time). A request whose
caller has given up (its ``deadline`` passed) before a worker takes it is answered 504
without calling ``run()``.

What ``init()`` or importing the script raises is printed (its traceback goes to the
replica's log, which its agent reports as the deployment's failure) and ends the process
with :data:`~cairn.serving.INIT_FAILED`. What ``run()`` raises is answered 500 with the
error's message (its traceback printed to the log) and the replica serves the next request.
Models: ``CAIRN_MODEL_DIRS`` (``{name: folder}`` relative to the replica's folder) becomes
``AZUREML_MODEL_DIR`` (the one model's folder, or the folder of all of them) before the script
is imported; ``Model.get_model_path(name)`` reads the same variables.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from cairn.serving import (
    INIT_FAILED,
    LENGTH,
    MAX_ANSWER_BYTES,
    MAX_FRAME_BYTES,
    SOCKET_NAME,
    TOKEN_ENV,
    WORKERS_ENV,
    ServeAnswer,
    ServeHello,
    ServeRequest,
    decode,
    encode,
)
from cairn.serving._collect import collector_from_env

__all__ = ["main", "model_dirs"]


def model_dirs() -> dict[str, str]:
    """The deployment's models: name -> absolute folder of its files."""
    raw = os.environ.get("CAIRN_MODEL_DIRS")
    if not raw:
        return {}
    found: dict[str, str] = json.loads(raw)
    return {name: str(Path(path).absolute()) for name, path in found.items()}


def _set_model_dir() -> None:
    dirs = model_dirs()
    if not dirs:
        return
    os.environ["CAIRN_MODEL_DIRS"] = json.dumps(dirs)
    if len(dirs) == 1:
        os.environ["AZUREML_MODEL_DIR"] = next(iter(dirs.values()))
    else:  # azureml-models/<name>/<version>: the folder of them all
        os.environ["AZUREML_MODEL_DIR"] = str(Path(next(iter(dirs.values()))).parent.parent)


def _load(entry: str) -> ModuleType:
    path = Path(entry).absolute()
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("score", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load entry script {entry}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["score"] = module
    spec.loader.exec_module(module)
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise AttributeError(f"entry script {entry} defines no {name}()")
    return module


def _recv(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def _answer(
    module: ModuleType, request: ServeRequest, limit: int = MAX_ANSWER_BYTES
) -> ServeAnswer:
    if request.deadline and time.time() > request.deadline:
        return ServeAnswer(
            id=request.id, status=504, body=_error("the caller gave up before run() was called")
        )
    try:
        raw = request.body.decode()
        json.loads(raw)
    except ValueError as exc:
        return ServeAnswer(id=request.id, status=400, body=_error(f"the body is not JSON: {exc}"))
    try:
        result: Any = module.run(raw)
        body = json.dumps(result, default=_plain).encode()
    except BaseException as exc:  # SystemExit too: every request is answered (else its
        # agent waits request_timeout_s, then restarts the replica)
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}"
        return ServeAnswer(id=request.id, status=500, body=_error(message))
    if len(body) > limit:
        message = (
            f"run()'s answer is {len(body)} bytes, over the limit of {limit} bytes"
            f" ({limit / 2**20:g} MiB) of an answer"
        )
        return ServeAnswer(id=request.id, status=500, body=_error(message))
    return ServeAnswer(id=request.id, status=200, body=body)


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as JSON (``tolist``/``item``)."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"run() returned {type(value).__name__}, which is not JSON")


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m cairn.serving <entry script>", file=sys.stderr)
        return 2
    gate = os.environ.get("CAIRN_AGENT_SOCKET")
    if not gate:
        print("cairn.serving runs as a deployment's replica, under its agent", file=sys.stderr)
        return 2
    token = os.environ.pop(TOKEN_ENV, "")  # the hello's, for no process the script starts
    _set_model_dir()
    try:
        module = _load(argv[0])
        module.init()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        return INIT_FAILED
    collector = collector_from_env()  # the deployment's data collector, if it has one
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(Path(gate).parent / SOCKET_NAME))
    sock.sendall(encode(ServeHello(pid=os.getpid(), token=token)))
    workers = max(1, int(os.environ.get(WORKERS_ENV) or 1))
    print(f"cairn.serving: init() returned; serving requests ({workers} at once)", flush=True)
    sending = threading.Lock()

    def answer(frame: ServeRequest, received: float) -> None:
        answered = _answer(module, frame)
        out = encode(answered)
        with sending:
            try:
                sock.sendall(out)
            except OSError:  # the agent closed the channel: its reader ends the loop
                return
        if collector is not None:  # after the answer went: never in the request's way
            collector.add(frame, answered, received)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="run")
    try:
        while True:
            (size,) = LENGTH.unpack(_recv(sock, LENGTH.size))
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"a frame of {size} bytes")
            frame = decode(_recv(sock, size))
            if isinstance(frame, ServeRequest):
                pool.submit(answer, frame, time.time())
    except (EOFError, OSError, ValueError):  # the agent closed the channel (or broke its
        pass  # framing): the replica is done, a run() still working or not
    # a run() still working (past its time) is abandoned: its thread cannot be stopped, and
    # would hold the interpreter's exit
    sock.close()
    if collector is not None:
        collector.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
