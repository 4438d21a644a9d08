"""What a job may ask of the services, decided by its agent.

A job's process gets no NATS credentials and no agent files: it gets a Unix socket that its
agent opens for the attempt (``cairn.bus._link`` is the job's side). Each request through it
is checked here and, when allowed, sent with the agent's own connection; the socket is
closed when the attempt ends, which revokes it. A job may:

- ask any query of its own workspace (what its submitter could read: its inputs, its
  metrics, the models and datasets it builds on);
- log metrics, set tags and properties, and upload files for its own run and for the child
  runs it creates (``run.create`` with its run as the parent, in its own experiment);
- start and end those child runs (and beat for them while they are open), but not its own
  run, which its agent ends from the script's exit code;
- register a model from its own runs' files, or from a staging area it filled itself;
- get-or-create its own experiment (the SDK does on first use);
- read the workspace secrets its job spec names (``JobSpec.secrets``), for its own runs;
- as a worker of a parallel run step, prepare, take and commit mini-batches
  (``parallel.*``) for its own run and attempt only.

Anything else — another run, another workspace, job tickets and reports, compute targets,
environments, datastores — is refused with ``PermissionDenied`` naming what was asked, and
nothing reaches the services.

A serving replica's gate (``replica=True``) lets nothing through at all: a replica needs no
query and no command. Its agent subscribes to the deployment's queue group and sends its
``ready`` report and request metrics with its own connection; the replica only answers
requests on ``serve.sock`` (:mod:`cairn.services.agent._serving`).

Only the ``Cairn-Offset`` header of an upload chunk is forwarded: no header a job sets can
speak for anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from cairn.bus._link import LinkAnswer, LinkRequest, read_frame, write_frame
from cairn.log import get_logger
from cairn.proto.artifacts import ListRunFiles
from cairn.proto.commands import ErrorReply, Opened, Reply
from cairn.proto.subjects import query

__all__ = ["SOCKET_NAME", "JobGate", "peer_in_session"]

log = get_logger("cairn.agent")
SOCKET_NAME = "agent.sock"
#: requests one job may have in flight through its agent
_IN_FLIGHT = 64
_FORWARDED_HEADERS = ("Cairn-Offset",)
#: verbs that change a run, and whether the job's own run may be their subject (its agent
#: starts and ends it; its children are the job's to start and end)
_RUN_VERBS = {
    "run.tag": True,
    "run.properties": True,
    "metrics.log": True,
    "run.start": False,
    "run.complete": False,
    "run.fail": False,
    "run.cancel": False,
    "run.heartbeat": False,
}
#: queries about people and workspaces, which the agent (the services' account) would be
#: answered in full
_ID_FIELDS = ("run_id", "parent_run_id", "staging_id", "name", "experiment_name")
_NOT_FOR_JOBS = frozenset({"workspace.list", "member.list"})
_reply_decoder = msgspec.json.Decoder(Reply)
_encoder = msgspec.json.Encoder()


def peer_in_session(writer: asyncio.StreamWriter, session: int | None) -> bool:
    """Whether the process at the other end of a Unix socket is of ``session`` (None: any
    process that can reach the socket, as in a container that sees no other)."""
    if session is None:
        return True
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", raw)[0]
        return os.getsid(pid) == session
    except OSError:  # the peer is gone, or no credentials here: not this job
        return False


class _Refused(Exception):
    pass


class JobGate:
    """One attempt's socket: open it before the job starts, close it when the job is gone."""

    def __init__(
        self,
        nc: NATS,
        *,
        workspace: str,
        run_id: str,
        attempt: int,
        experiment: str,
        secrets: Iterable[str] = (),
        replica: bool = False,
    ) -> None:
        self.nc = nc
        #: a serving replica's gate, which lets nothing through
        self.replica = replica
        self.workspace, self.run_id, self.attempt = workspace, run_id, attempt
        self.experiment = experiment
        #: the secrets the job was granted (``JobSpec.secrets``)
        self.secrets = frozenset(secrets)
        #: the job's run and the child runs it created
        self.runs = {run_id}
        #: staging areas the job filled itself, and the upload sessions it opened
        self.staging: set[str] = set()
        self.sessions: set[str] = set()
        self.folder: Path | None = None
        #: the job's session (its processes'), known once it is launched: a connection from
        #: any other process is dropped (another job, as the same OS user, could find this
        #: socket's path in /proc/net/unix)
        self.session: int | None = None
        self._launched = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> Path:
        assert self.folder is not None, "the gate is not open"
        return self.folder / SOCKET_NAME

    async def open(self, root: Path | None = None) -> Path:
        """Listen on a socket in a fresh private folder under ``root`` (the agent's, which
        its jobs are walled off from but for their own folder; short: a socket's path is at
        most about 100 bytes, which a job's own folder may exceed); returns the folder."""
        self.folder = Path(tempfile.mkdtemp(prefix="g-", dir=root))
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)
        return self.folder

    def admit(self, session: int | None) -> None:
        """The job is launched: from now on only processes of ``session`` may connect (None:
        any process that can reach the socket, as in a container that sees no other)."""
        self.session = session
        self._launched.set()

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> bool:
        return peer_in_session(writer, self.session)

    async def close(self) -> None:
        """Revoke: stop listening, drop every connection, remove the socket."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(self._launched.wait(), 30)
        except TimeoutError:
            pass
        if not self._launched.is_set() or not self._peer_allowed(writer):
            log.warning("gate_peer_refused", run_id=self.run_id)
            writer.close()
            return
        self._writers.add(writer)
        room = asyncio.Semaphore(_IN_FLIGHT)
        decoder = msgspec.msgpack.Decoder(LinkRequest)
        try:
            while True:
                try:
                    request = decoder.decode(await read_frame(reader))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except (ValueError, msgspec.DecodeError) as exc:  # not the job's SDK talking
                    log.warning("gate_bad_frame", run_id=self.run_id, error=str(exc))
                    return
                await room.acquire()
                task = asyncio.create_task(self._answer(request, writer))
                self._tasks.add(task)

                def done(task: asyncio.Task[None], room: asyncio.Semaphore = room) -> None:
                    self._tasks.discard(task)
                    room.release()

                task.add_done_callback(done)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def handle(self, request: LinkRequest) -> LinkAnswer:
        """Check ``request`` and forward it if the job may send it: the answer, or a refusal
        (``permission_denied``) as the reply. What the socket does for each frame, and what
        the attempt's MLflow endpoint (``_mlflow.py``) does for each of its requests."""
        try:
            return await self._forward(request)
        except _Refused as refused:
            reason = str(refused)
            log.info("job_request_refused", run_id=self.run_id, subject=request.subject)
            body = _encoder.encode(ErrorReply(code="permission_denied", message=reason))
            return LinkAnswer(request.id, body)
        except Exception as exc:  # the agent's own trouble (its connection): the job hears it
            log.warning("gate_forward_failed", run_id=self.run_id, error=repr(exc))
            body = _encoder.encode(
                ErrorReply(code="unavailable", message=f"this job's agent could not ask: {exc}")
            )
            return LinkAnswer(request.id, body)

    async def _answer(self, request: LinkRequest, writer: asyncio.StreamWriter) -> None:
        answer = await self.handle(request)
        if writer.is_closing():
            return
        write_frame(writer, answer)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _forward(self, request: LinkRequest) -> LinkAnswer:
        subject = request.subject
        body = await self._check(subject, request.data)
        headers = {
            k: v for k, v in (request.headers or {}).items() if k in _FORWARDED_HEADERS
        } or None
        timeout = min(max(request.timeout, 0.1), 600.0)
        try:
            msg = await self.nc.request(subject, request.data, timeout=timeout, headers=headers)
        except NatsTimeout:
            return LinkAnswer(request.id, failure="timeout")
        except NoRespondersError:
            return LinkAnswer(request.id, failure="no_responders")
        if body is not None:
            self._learn(subject, body, msg.data)
        return LinkAnswer(request.id, msg.data, msg.headers)

    async def _check(self, subject: str, data: bytes) -> dict[str, Any] | None:
        """Refuse what the job may not send; returns a command's body (to learn from its
        reply), None for a query or an upload session's message."""
        if self.replica:
            raise _Refused(
                f"a serving replica may send nothing through its agent, not {subject}: its"
                " agent takes its requests and reports for it (docs/security.md)"
            )
        if subject in self.sessions or subject.removesuffix(".commit") in self.sessions:
            return None
        if subject.startswith(f"cairn.q.{self.workspace}."):
            name = subject.removeprefix(f"cairn.q.{self.workspace}.")
            if name in _NOT_FOR_JOBS:
                raise _Refused(f"a job may not ask {name}: it answers for people, not runs")
            return None
        prefix = f"cairn.cmd.{self.workspace}."
        if not subject.startswith(prefix):
            raise _Refused(
                f"a job may send only its own workspace's commands and queries, not {subject}"
            )
        verb = subject.removeprefix(prefix)
        try:
            body = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise _Refused(f"{verb}: the command is not JSON") from exc
        if not isinstance(body, dict):
            raise _Refused(f"{verb}: the command is not a JSON object")
        for key in _ID_FIELDS:
            if not isinstance(body.get(key, ""), (str, type(None))):
                raise _Refused(f"{verb}: {key} is not text")
        await self._allowed(verb, body)
        return body

    async def _allowed(self, verb: str, body: dict[str, Any]) -> None:
        if verb in _RUN_VERBS:
            self._run_verb(verb, body)
            return
        check = {
            "experiment.create": self._experiment,
            "run.create": self._child_run,
            "secret.read": self._secret,
            "model.register": self._model,
            "parallel.prepare": self._parallel,
            "parallel.take": self._parallel,
            "parallel.commit": self._parallel,
        }.get(verb)
        if verb == "artifact.upload":
            await self._upload(body)
        elif check is not None:
            check(body)
        else:
            raise _Refused(
                f"a job may not send {verb}: it acts for its own run only (docs/security.md)"
            )

    def _run_verb(self, verb: str, body: dict[str, Any]) -> None:
        run = body.get("run_id")
        self._own_run(verb, run, itself=_RUN_VERBS[verb])
        attempt = body.get("attempt")
        if verb == "metrics.log" and run == self.run_id and attempt not in (None, self.attempt):
            raise _Refused(f"metrics.log: this job is attempt {self.attempt} of its run")

    def _experiment(self, body: dict[str, Any]) -> None:
        if body.get("name") != self.experiment:
            raise _Refused(f"experiment.create: a job uses its own experiment ({self.experiment})")

    def _child_run(self, body: dict[str, Any]) -> None:
        if body.get("parent_run_id") not in self.runs:
            raise _Refused("run.create: a job creates only child runs of its own runs")
        if body.get("experiment_name") != self.experiment:
            raise _Refused(
                f"run.create: a job's child runs belong to its experiment ({self.experiment})"
            )

    async def _upload(self, body: dict[str, Any]) -> None:
        if body.get("staging"):
            await self._staging_area(str(body.get("run_id")))
        else:
            self._own_run("artifact.upload", body.get("run_id"), itself=True)

    def _secret(self, body: dict[str, Any]) -> None:
        name = body.get("name")
        if name not in self.secrets:
            raise _Refused(
                f"secret.read: this job was not granted secret {name!r:.80}; list it in the"
                " job's secrets (ScriptRunConfig(secrets=[...]), `secrets:` in a job file)"
            )
        self._own_run("secret.read", body.get("run_id"), itself=True)

    def _parallel(self, body: dict[str, Any]) -> None:
        if body.get("run_id") != self.run_id or body.get("attempt") != self.attempt:
            raise _Refused(
                f"parallel: a worker sends mini-batch commands as attempt {self.attempt} of its"
                " own run only"
            )

    def _model(self, body: dict[str, Any]) -> None:
        staging = body.get("staging_id")
        if not (
            body.get("run_id") in self.runs or (staging is not None and staging in self.staging)
        ):
            raise _Refused(
                "model.register: a job registers models from its own runs' files or from a"
                " staging area it filled"
            )

    def _own_run(self, verb: str, run: Any, *, itself: bool) -> None:
        if run not in self.runs:
            raise _Refused(f"{verb}: run {run!r:.40} is not this job's run or one of its children")
        if run == self.run_id and not itself:
            raise _Refused(f"{verb}: this job's agent ends its run from the script's exit code")

    async def _staging_area(self, area: str) -> None:
        """A staging area is the job's when it filled it first: a new area must be empty."""
        if area in self.staging:
            return
        subject = query(self.workspace, ListRunFiles.NAME)
        msg = await self.nc.request(subject, _encoder.encode(ListRunFiles(run_id=area)), 10)
        reply = _reply_decoder.decode(msg.data)
        files = getattr(reply, "data", None)
        if isinstance(reply, ErrorReply) or files:
            raise _Refused(f"artifact.upload: staging area {area!r:.40} is not this job's")
        self.staging.add(area)

    def _learn(self, subject: str, body: dict[str, Any], reply_data: bytes) -> None:
        """What a reply grants: a child run it created, an upload session it opened."""
        try:
            reply = _reply_decoder.decode(reply_data)
        except msgspec.DecodeError:
            return
        if isinstance(reply, ErrorReply):
            return
        if subject.endswith(".run.create"):
            self.runs.add(str(body["run_id"]))
        elif isinstance(reply, Opened):
            self.sessions.add(reply.subject)
