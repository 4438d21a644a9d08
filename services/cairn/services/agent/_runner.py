"""One attempt of one job on an agent: prepare, run, stream logs, upload outputs, report.

The attempt watches its run's event subject while it runs: ``RunCancelRequested`` stops the
process tree (SIGTERM to its process group, SIGKILL after the grace period), and any sign
that the attempt is no longer current (a newer ``RunAssigned``, a ``RunRequeued`` of this
attempt, an end) stops it too. Progress reports renew the lease and are the backstop for
a missed event: their reply says whether the attempt is still current and whether to cancel.
A stale attempt reports nothing more and uploads nothing (the artifact service refuses an
upload from a stale attempt as well).

A job whose process could not be started fails its run with the cause when the cause is the
job's own (its command), and loses the attempt when it may pass (``_launch``: the machine
short of something now, the job's socket or endpoint not opened): the scheduler re-queues the
run within its attempt budget, as it does for any lost attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import msgspec

from cairn.data import download_blob, upload_file
from cairn.errors import (
    CairnError,
    ConcurrencyConflict,
    DataChanged,
    InvalidInput,
    NotFound,
    StaleAttempt,
    Unavailable,
)
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.artifacts import GetRunFile
from cairn.proto.events import (
    RunAssigned,
    RunCanceled,
    RunCancelRequested,
    RunCompleted,
    RunFailed,
    RunRequeued,
    decode_envelope,
)
from cairn.proto.jobs import (
    SNAPSHOT_FILE,
    Assignment,
    FinishJob,
    JobStatus,
    Outcome,
    ReportJob,
    derived_id,
)
from cairn.proto.metrics import LogMetrics
from cairn.proto.serving import ReportReplica
from cairn.rpc import Client
from cairn.services.agent._backends import STACK_LABEL, Backend, Launched, Runtime, stack_of
from cairn.services.agent._collect import CollectedData
from cairn.services.agent._data import (
    DataContext,
    Staged,
    deliver_outputs,
    output_path,
    stage_inputs,
)
from cairn.services.agent._gate import JobGate
from cairn.services.agent._launch import launch_passing
from cairn.services.agent._mlflow import MlflowEndpoint, MlflowServer
from cairn.services.agent._phases import PhaseLines, reporting
from cairn.services.agent._serving import (
    Relay,
    ReplicaChannel,
    RequestStats,
    relay,
    until_acknowledged,
)
from cairn.serving import INIT_FAILED, TOKEN_ENV, WORKERS_ENV
from cairn.settings import Settings

__all__ = ["LOG_FILE", "Attempt"]

log = get_logger("cairn.agent")
LOG_FILE = "user_logs/std_log.txt"
_LOG_FLUSH_S = 0.1
_LOG_BATCH = 64 * 1024
#: seconds between a replica's request metrics (logged only when it answered something)
REQUEST_METRICS_S = 5.0
#: a replica's ``ready`` report is sent again after this, doubling up to the most
READY_RETRY_FIRST_S = 0.5
READY_RETRY_MOST_S = 30.0
#: a replica's ``failed`` report is sent again for at most this long (a report never recorded
#: is covered by the roll's deadline, ``DeploymentSpec.rollout_timeout_s``)
FAILED_REPORT_WITHIN_S = 300.0
_REF = re.compile(r"\$\{\{\s*((?:inputs|outputs)\.[A-Za-z0-9_-]+)\s*\}\}")


def _passing(exc: CairnError) -> bool:
    """A refusal worth another try: the scheduler away or restarting, a lost race, or an
    internal error (the root class itself, which unknown codes also become)."""
    return isinstance(exc, (Unavailable, ConcurrencyConflict)) or type(exc) is CairnError


async def _send_failed(
    send: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event,
    within_s: float = FAILED_REPORT_WITHIN_S,
    first_s: float = READY_RETRY_FIRST_S,
    most_s: float = READY_RETRY_MOST_S,
) -> bool:
    """A ``failed`` report, sent as ``ready`` is (the same command, again until the scheduler
    acknowledges it or refuses it for good), but for ``within_s`` at most: the attempt's end
    waits on it. False when it was not recorded."""
    try:
        return await asyncio.wait_for(
            until_acknowledged(send, stop=stop, passing=_passing, first_s=first_s, most_s=most_s),
            within_s,
        )
    except TimeoutError:
        return False


class Attempt:
    def __init__(
        self,
        *,
        client: Client,
        settings: Settings,
        assignment: Assignment,
        agent_id: str,
        workdir: Path,
        snapshots: Path,
        data_cache: Path,
        backend: Backend,
        gpus: list[int],
        gates: Path | None = None,
        mlflow: MlflowServer,
    ) -> None:
        self.client, self.settings, self.a = client, settings, assignment
        self.mlflow = mlflow  # the agent's MLflow server: the attempt's token in it
        self.gates = gates
        self.agent_id, self.workdir, self.snapshots = agent_id, workdir, snapshots
        self.data_cache = data_cache
        self.inputs: dict[str, Staged] = {}
        self.backend, self.gpus = backend, gpus
        self.ws = client.workspace
        self.stale = False
        self.cancel_reason: str | None = None
        self.lost_reason: str | None = None
        self.stopping = asyncio.Event()  # the job's process must stop
        self.gone = asyncio.Event()  # the attempt went stale: the run moved on without it
        self.finished = asyncio.Event()  # the attempt's end is recorded (or it went stale)
        #: the job's process is gone: its slot (and GPUs) may take the next job while the
        #: attempt uploads its outputs and records its end
        self.exited = asyncio.Event()
        self.launched: Launched | None = None
        #: a serving replica's channel (``JobSpec.serve``), and its relay's subscription
        self.channel: ReplicaChannel | None = None
        self._serving: Relay | None = None
        self.requests = RequestStats()
        #: what a replica with a data collector collected, delivered to its datastore
        self.collected = CollectedData.of(
            client,
            settings,
            assignment.job.serve,
            workdir / "src",
            assignment.run_id,
            assignment.attempt,
        )
        self._log_seq = 0
        self._log_file: Any = None
        #: why the job's process was not started, and whether that may pass (``_not_started``)
        self.not_started: tuple[str, bool] | None = None

    # -- signals from the log ------------------------------------------------------------

    def _on_event(self, payload: bytes) -> None:
        try:
            ev = decode_envelope(payload).data
        except Exception:  # an event this agent cannot read says nothing about its attempt
            return
        attempt = self.a.attempt
        match ev:
            case RunCancelRequested(reason=reason):
                self._stop(cancel=reason or "canceled")
            case RunAssigned(attempt=n) if n > attempt:
                self._stop(stale=True)
            case RunRequeued(attempt=n) if n == attempt:
                self._stop(stale=True)
            case RunCompleted(attempt=n) | RunFailed(attempt=n) | RunCanceled(attempt=n) if (
                n != attempt
            ):
                self._stop(stale=True)

    def _stop(self, *, cancel: str | None = None, stale: bool = False) -> None:
        if stale:
            self.stale = True
            self.gone.set()
        if cancel is not None and self.cancel_reason is None:
            self.cancel_reason = cancel
        self.stopping.set()

    def abandon(self, reason: str) -> None:
        """The agent is going away: stop the job and report the attempt lost (re-queued)."""
        self.lost_reason = reason
        self.stopping.set()

    async def _report(self, phase: Literal["running", "progress"]) -> None:
        reply = await self.client.send_any(
            ReportJob(
                command_id=(
                    derived_id("start", self.ws, self.a.run_id, self.a.attempt)
                    if phase == "running"
                    else uuid.uuid4().hex
                ),
                run_id=self.a.run_id,
                attempt=self.a.attempt,
                phase=phase,
            )
        )
        status = msgspec.convert(getattr(reply, "data", None), JobStatus)
        if status.cancel:
            self._stop(cancel=status.reason or "canceled")

    async def _keep_lease(self) -> None:
        """Report every lease/3 until the attempt's end is recorded: through the job, its
        stopping, its uploads and the retries of its finish (a scheduler that restarts
        meanwhile must not take back a run whose only missing piece is that report)."""
        every = max(self.a.lease_s / 3, 0.2)
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), every)
            if self.finished.is_set():
                return
            try:
                await self._report("progress")
            except (StaleAttempt, NotFound) as exc:  # the lease was taken back: stop the job
                log.warning(
                    "lease_lost", run_id=self.a.run_id, attempt=self.a.attempt, error=str(exc)
                )
                self._stop(stale=True)
                return
            except Exception as exc:  # the scheduler may be restarting; the lease has slack
                log.warning("report_failed", run_id=self.a.run_id, error=repr(exc))

    # -- the attempt ---------------------------------------------------------------------

    async def run(self) -> None:
        nc = self.client.conn.nc
        watch = await nc.subscribe(subjects.event(self.ws, "run", self.a.run_id), cb=self._on_watch)
        lease = asyncio.create_task(self._keep_lease())
        try:
            try:
                outcome, exit_code, error = await self._run()
            finally:
                self.stopping.set()
            if self.a.job.serve is not None and outcome == "failed" and not self.stale:
                await self._report_failed(error)
            if self.stale:
                log.info("attempt_stale", run_id=self.a.run_id, attempt=self.a.attempt)
                return
            await self._finish(outcome, exit_code, error)
        finally:
            self.exited.set()
            self.finished.set()
            await lease
            with contextlib.suppress(Exception):
                await watch.unsubscribe()

    async def _on_watch(self, msg: Any) -> None:
        self._on_event(msg.data)

    async def _finish(self, outcome: Outcome, exit_code: int | None, error: str) -> None:
        run_id, attempt = self.a.run_id, self.a.attempt
        cmd = FinishJob(
            command_id=derived_id("finish", self.ws, run_id, attempt),
            run_id=run_id,
            attempt=attempt,
            outcome=outcome,
            exit_code=exit_code,
            error=error[-16000:],
        )
        for delay in (0.5, 1, 2, 4, 8, 15, 30):  # the same command id: a retry is idempotent
            try:
                await self.client.send(cmd)
            except StaleAttempt as exc:  # the run moved on (this attempt was lost): fenced
                log.info("finish_refused_stale", run_id=run_id, attempt=attempt, error=exc.message)
                return
            except CairnError as exc:
                if not _passing(exc):
                    log.warning("finish_refused", run_id=run_id, error=exc.message)
                    return
                await asyncio.sleep(delay)
                continue
            log.info(
                "attempt_finished",
                run_id=run_id,
                attempt=attempt,
                outcome=outcome,
                exit_code=exit_code,
            )
            return
        log.warning("finish_undelivered", run_id=run_id)

    async def _run(self) -> tuple[Outcome, int | None, str]:
        try:
            src, runtime = await self._prepare()
        except (InvalidInput, NotFound, DataChanged) as exc:  # the job's own fault: a bad
            return "failed", None, str(exc)  # snapshot, environment or input
        except Exception as exc:  # the agent's fault: let another attempt try
            log.warning("prepare_failed", run_id=self.a.run_id, error=repr(exc))
            return "lost", None, f"agent {self.agent_id} could not prepare the job: {exc!r}"
        if self.lost_reason is not None:
            return "lost", None, self.lost_reason
        if self.stopping.is_set():
            return self._stopped_outcome(None)
        try:
            await self._report("running")
        except (StaleAttempt, NotFound):
            self._stop(stale=True)
            return "lost", None, "stale"
        except CairnError as exc:
            return "lost", None, f"agent {self.agent_id} could not report the start: {exc}"
        code = await self._execute(src, runtime)
        return await self._ended(code, src)

    async def _ended(self, code: int | None, src: Path) -> tuple[Outcome, int | None, str]:
        """The outcome once the job's process is gone (its outputs delivered first)."""
        if self.collected is not None and not self.stale:  # the replica's last records
            await self.collected.deliver(final=True)
        if self.lost_reason is not None:
            return "lost", code, self.lost_reason
        if self.cancel_reason is not None:
            return self._stopped_outcome(code)
        unstarted, passing = self.not_started or ("", False)
        if passing:  # not the job's: the run is re-queued within its attempt budget
            return "lost", None, f"agent {self.agent_id} could not start the job: {unstarted}"
        if self.a.job.serve is not None:
            return self._replica_outcome(code, src)
        if not self.stale:
            await self._upload_outputs(src)
        if unstarted:  # the job's own: its log says the same
            return "failed", code, unstarted
        if code == 0 and not self.stale and self.a.job.outputs:
            try:
                await deliver_outputs(self._data(), self.a.job.outputs, src, self.a.run_id)
            except CairnError as exc:
                return "failed", code, f"delivering the outputs failed: {exc}"
        if code == 0:
            return "completed", 0, ""
        return "failed", code, f"the job's process exited with code {code}"

    def _replica_outcome(self, code: int | None, src: Path) -> tuple[Outcome, int | None, str]:
        """A replica ends only when stopped: one whose ``init()`` raised failed (its log's
        end, the traceback, is the error); any other end loses the attempt, and the
        scheduler puts the replica back in the queue as it does a lost job."""
        if code == INIT_FAILED and (self.channel is None or not self.channel.ready.is_set()):
            return "failed", code, _tail(src / LOG_FILE)
        if self.not_started is not None:  # a command of its own it cannot start
            return "lost", code, self.not_started[0]
        return "lost", code, f"the replica's process exited with code {code}"

    def _replica_report(self, phase: Literal["ready", "failed"], error: str = "") -> ReportReplica:
        serve = self.a.job.serve
        assert serve is not None
        return ReportReplica(
            command_id=derived_id(f"replica-{phase}", self.a.run_id, self.a.attempt),
            endpoint=serve.endpoint,
            deployment=serve.deployment,
            run_id=self.a.run_id,
            attempt=self.a.attempt,
            phase=phase,
            error=error[-16000:],
        )

    async def _report_failed(self, error: str) -> None:
        """``failed``, sent again until the scheduler acknowledges it (``_send_failed``): a
        lost report would leave a rolling update open with both specs' replicas up."""
        cmd = self._replica_report("failed", error)
        if not await _send_failed(lambda: self.client.send(cmd), stop=self.gone):
            # a deployment replaced or deleted meanwhile, the attempt gone, or the scheduler
            # away for good: the roll's deadline rolls it back
            log.warning("replica_failed_not_recorded", run_id=self.a.run_id)

    async def _report_ready(self, channel: ReplicaChannel) -> None:
        """``ready``, sent again (the same command) until the scheduler acknowledges it: a
        lost report would leave a rolling update waiting with both specs' replicas up."""
        cmd = self._replica_report("ready")
        sent = await until_acknowledged(
            lambda: self.client.send(cmd),
            stop=channel.closed,
            passing=_passing,
            first_s=READY_RETRY_FIRST_S,
            most_s=READY_RETRY_MOST_S,
        )
        if not sent:  # a deployment replaced or deleted meanwhile, or the replica gone
            log.warning("replica_ready_not_recorded", run_id=self.a.run_id)

    async def _serve(self, channel: ReplicaChannel) -> None:
        """Once the replica is ready: take its deployment's requests, then say so."""
        serve = self.a.job.serve
        assert serve is not None
        await channel.ready.wait()
        nc = self.client.conn.nc
        self._serving = await relay(nc, self.ws, serve, channel, self.requests)
        log.info("replica_ready", run_id=self.a.run_id, deployment=serve.deployment)
        reporting = asyncio.create_task(self._report_ready(channel))
        try:
            while not channel.over.is_set():  # its request metrics, every few seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.over.wait(), REQUEST_METRICS_S)
                await self._log_requests()
                if self.collected is not None and self.collected.due():
                    await self.collected.deliver()
        finally:
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting
        # a run() past its time, or a broken channel: this replica is done; its loss gets it
        # replaced. After a run() past its time the others in its hands finish first (each
        # within its own time, the ones waiting for a worker refused unrun)
        grace = self.settings.job_cancel_grace_s
        if not channel.closed.is_set():
            grace = max(grace, serve.request_timeout_s + serve.max_queue_wait_s + 1.0)
        await self._stop_serving(grace)
        if self.launched is not None:
            log.warning("replica_channel_closed", run_id=self.a.run_id)
            self.launched.kill()

    async def _stop_serving(self, grace: float | None = None) -> None:
        """No more requests for this replica: the server is told first, then the requests
        already delivered are answered (a plain unsubscribe would drop them, and cancel the
        one being answered, leaving their callers to time out), for at most ``grace``
        seconds (``job_cancel_grace_s``)."""
        sub, self._serving = self._serving, None
        if sub is not None:
            try:
                limit = self.settings.job_cancel_grace_s if grace is None else grace
                await asyncio.wait_for(sub.drain(), limit)
            except Exception:  # past the grace period, or the connection is away
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            await self._log_requests()

    async def _log_requests(self) -> None:
        """What the replica answered since the last time, as its run's metrics."""
        points = self.requests.take()
        if not points:
            return
        cmd = LogMetrics(
            command_id=uuid.uuid4().hex,
            run_id=self.a.run_id,
            points=points,
            attempt=self.a.attempt,
        )
        try:
            await self.client.send(cmd)
        except CairnError as exc:  # counts are best effort, as logs are
            log.warning("request_metrics_failed", run_id=self.a.run_id, error=exc.message)

    def _stopped_outcome(self, code: int | None) -> tuple[Outcome, int | None, str]:
        return "canceled", code, self.cancel_reason or "canceled"

    async def _prepare(self) -> tuple[Path, Runtime]:
        job = self.a.job
        if job.gpus > len(self.gpus):
            raise InvalidInput(
                f"the job needs {job.gpus} GPUs; agent {self.agent_id} could give it"
                f" {len(self.gpus)}"
            )
        src = self.workdir / "src"
        src.mkdir(parents=True, exist_ok=True)
        if job.snapshot is not None:
            archive = self.snapshots / (job.snapshot.removeprefix("sha256:") + ".tar.gz")
            if not archive.exists():  # cached by digest: one download per agent
                size = await self._blob_size(job.snapshot)
                await download_blob(self.client, job.snapshot, size, archive, show_progress=False)
            await self.backend.unpack(archive, src)
        if job.inputs:
            self.inputs = await stage_inputs(self._data(), job.inputs, src, self.data_cache)
        return src, await self._runtime()

    async def _runtime(self) -> Runtime:
        """The backend's runtime for the job's environment; building it tells its phases in
        the job's log stream (``_phases``), which the person waiting sees."""
        subject = subjects.logs(self.ws, self.a.run_id)

        async def ship(line: bytes) -> None:
            await self._ship(subject, line)

        async with PhaseLines(ship) as lines:
            with reporting(lines):
                return await self.backend.runtime(self.a.job.environment)

    def _data(self) -> DataContext:
        return DataContext(self.client, self.settings)

    async def _blob_size(self, digest: str) -> int:
        area = self.a.job.snapshot_area or ""
        info = (await self.client.ask(GetRunFile(run_id=area, path=SNAPSHOT_FILE))).data
        if info["digest"] != digest:
            raise InvalidInput(f"staging area {area} holds another snapshot")
        return int(info["size"])

    def _job_vars(self) -> dict[str, str]:
        """The environment's variables, then the job's."""
        env: dict[str, str] = {}
        job_env = self.a.job.environment
        if job_env is not None:
            env.update(job_env.spec.env_vars)
        env.update(self.a.job.env_vars)
        return env

    def _environ(self, gate: Path) -> dict[str, str]:
        """What the job's process sees besides what it keeps of the machine's environment:
        the environment's and the job's variables, where its run is (``Run.get_context()``
        binds to it) and its agent's socket — no credentials, no agent files: a private
        ``CAIRN_HOME`` in the job's folder (where its SDK spools)."""
        env = self._job_vars()
        env.update(
            PYTHONUNBUFFERED="1",
            CAIRN_HOME=str(self.workdir / "src" / ".cairn"),
            CAIRN_AGENT_SOCKET=str(gate),
            CAIRN_WORKSPACE=self.ws,
            CAIRN_RUN_ID=self.a.run_id,
            CAIRN_EXPERIMENT=self.a.experiment_name,
            CAIRN_ATTEMPT=str(self.a.attempt),
        )
        if self.a.job.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in self.gpus)
        if self.inputs:
            env["CAIRN_INPUT_DATASETS"] = msgspec.json.encode(self.inputs).decode()
        if (serve := self.a.job.serve) is not None:  # relative to the replica's folder
            dirs = {m.name: f"azureml-models/{m.name}/{m.version}" for m in serve.models}
            env["CAIRN_MODEL_DIRS"] = msgspec.json.encode(dirs).decode()
            env[WORKERS_ENV] = str(serve.max_concurrent_requests)
        if self.collected is not None:
            env.update(self.collected.environ())
        return env

    def _argv(self, python: str) -> list[str]:
        """The command with ``python`` and ``${{inputs|outputs.<name>}}`` made concrete."""
        paths = {f"inputs.{n}": s.path for n, s in self.inputs.items()}
        paths.update({f"outputs.{o.name}": output_path(o) for o in self.a.job.outputs})

        def sub(match: re.Match[str]) -> str:
            return paths.get(match.group(1), match.group(0))

        argv = [_REF.sub(sub, arg) for arg in self.a.job.command]
        if argv[0] == "python":
            argv[0] = python
        return argv

    async def _open_ways(self, gate: JobGate) -> tuple[dict[str, str], MlflowEndpoint | None]:
        """Open the job's ways out: its gate, and either a replica's channel or the MLflow
        endpoint (a replica gets none); returns the process's environment."""
        folder = await gate.open(self.gates)
        environ = self._environ(gate.path)
        serve = self.a.job.serve
        if serve is not None:
            self.channel = ReplicaChannel(
                folder, workers=serve.max_concurrent_requests, queue_wait=serve.max_queue_wait_s
            )
            await self.channel.open()
            environ[TOKEN_ENV] = self.channel.token  # its hello's: no other process has it
            return environ, None
        mlflow = self.mlflow.open(gate)
        environ.update(mlflow.environ())
        return environ, mlflow

    def _job_folders(self, src: Path) -> None:
        """``./outputs``, the outputs' folders, and the job's log file, opened."""
        (src / "outputs").mkdir(exist_ok=True)
        for out in self.a.job.outputs:
            (src / output_path(out)).mkdir(parents=True, exist_ok=True)
        log_path = src / LOG_FILE
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log_path, "ab")  # local disk, written in chunks

    def _not_started(self, argv: list[str], exc: BaseException, *, passing: bool) -> int:
        """The job's process was not started: said in its log, and remembered for its outcome
        (:meth:`_ended`): ``passing``, a cause that may pass (the attempt is lost and the run
        re-queued), else the job's own (its run fails with the cause). 127, as a shell
        answers a command it cannot start."""
        said = f"cannot start {argv[0]!r}: {exc}"
        self.not_started = (said, passing)
        self._write_log(f"{said}\n".encode())
        if self._log_file is not None:
            self._log_file.close()
        log.warning(
            "job_not_started",
            run_id=self.a.run_id,
            attempt=self.a.attempt,
            error=said,
            passing=passing,
        )
        return 127

    async def _execute(self, src: Path, runtime: Runtime) -> int | None:
        argv = self._argv(runtime.python)
        try:
            _startable(argv, self._job_vars())
            self._job_folders(src)
        except (OSError, ValueError) as exc:  # an argument no program can be given, a path
            # of the job's in the way (the job's), or a full disk
            return self._not_started(argv, exc, passing=launch_passing(exc))
        labels = {
            "cairn.run": self.a.run_id,
            "cairn.attempt": str(self.a.attempt),
            "cairn.agent": self.agent_id,
            STACK_LABEL: stack_of(self.settings),
        }
        gate = JobGate(
            self.client.conn.nc,
            workspace=self.ws,
            run_id=self.a.run_id,
            attempt=self.a.attempt,
            experiment=self.a.experiment_name,
            secrets=self.a.job.secrets,
            replica=self.a.job.serve is not None,
        )
        mlflow: MlflowEndpoint | None = None
        launching = False
        try:
            environ, mlflow = await self._open_ways(gate)
            launching = True
            self.launched = launched = await self.backend.launch(
                runtime, argv, src, environ, labels, self.gpus
            )
            gate.admit(launched.session)
            if self.channel is not None:
                self.channel.admit(launched.session, launched.pid)
        except (OSError, CairnError) as exc:
            await self._close_ways(gate, mlflow)
            # the job's ways out are the agent's to open: their failure is never the job's
            return self._not_started(argv, exc, passing=not launching or launch_passing(exc))
        except BaseException as exc:  # the agent's own fault, or canceled
            await self._unlaunched(exc, gate, mlflow)
            return None
        waiter = asyncio.ensure_future(launched.wait)
        try:
            pump = asyncio.create_task(self._pump_logs(launched.output))
            stopper = asyncio.create_task(self.stopping.wait())
            serving = (
                None if self.channel is None else asyncio.create_task(self._serve(self.channel))
            )
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            if serving is not None and self.channel is not None:  # no more requests for it
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
                await self._stop_serving()
                if not waiter.done():  # the request it holds is answered before it stops
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.channel.idle(), self.settings.job_cancel_grace_s
                        )
            if not waiter.done():
                await self._stop_job(launched, waiter)
            stopper.cancel()
            await pump
            return waiter.result()
        finally:
            if not waiter.done():  # an error on the way: the job must not run on
                launched.kill()
            await self._stop_serving()
            if self.channel is not None:
                await self.channel.close()
            if mlflow is not None:
                await mlflow.close()
            await gate.close()  # revoked: nothing the job left behind can speak for it
            self._log_file.close()
            if launched.cleanup is not None:
                await asyncio.to_thread(launched.cleanup)
            self.exited.set()

    async def _unlaunched(
        self, exc: BaseException, gate: JobGate, mlflow: MlflowEndpoint | None
    ) -> None:
        """A launch that failed unexpectedly (``exc``), maybe once its process or container
        started: that is killed and removed, the job's ways out and its log file are closed
        (its slot and GPUs are freed as the attempt ends), and the attempt is lost, naming
        the cause; a cancellation goes on."""
        if isinstance(exc, Exception):
            self.lost_reason = f"agent {self.agent_id} could not start the job: {exc!r}"
            self._write_log(f"cairn: {self.lost_reason}\n".encode())
            log.warning("launch_failed", run_id=self.a.run_id, error=repr(exc))
        launched = self.launched
        if launched is not None:
            launched.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(launched.wait, self.settings.job_cancel_grace_s)
            if launched.cleanup is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(launched.cleanup)
        await self._close_ways(gate, mlflow)
        self._log_file.close()
        if not isinstance(exc, Exception):
            raise exc

    async def _close_ways(self, gate: JobGate, mlflow: MlflowEndpoint | None) -> None:
        """A job that did not start: its ways out (gate, MLflow endpoint, replica channel)
        closed, nothing admitted through them; one that fails to close is logged and the
        others are closed still (the launch's own failure is what the attempt reports)."""
        gate.admit(None)
        ways = [mlflow, self.channel, gate]
        for way in ways:
            if way is None:
                continue
            try:
                await way.close()
            except Exception as exc:
                log.warning(
                    "job_way_not_closed",
                    run_id=self.a.run_id,
                    way=type(way).__name__,
                    error=repr(exc),
                )

    async def _stop_job(self, launched: Launched, waiter: asyncio.Future[int]) -> None:
        """SIGTERM, the grace period, then SIGKILL (to the whole group or container)."""
        launched.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.settings.job_cancel_grace_s)
        except TimeoutError:
            pass
        launched.kill()  # stragglers of the group, too
        await waiter

    def _write_log(self, data: bytes) -> None:
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.write(data)

    async def _pump_logs(self, stream: asyncio.StreamReader) -> None:
        """Ship the job's output to LOGS in batches (at most every 100 ms or 64 KiB)."""
        subject = subjects.logs(self.ws, self.a.run_id)
        pending = bytearray()
        last = time.monotonic()
        while True:
            try:
                chunk = await asyncio.wait_for(stream.read(_LOG_BATCH), _LOG_FLUSH_S)
            except TimeoutError:
                chunk = None
            if chunk:
                pending += chunk
                self._write_log(chunk)
            done = chunk == b""
            due = done or chunk is None or time.monotonic() - last >= _LOG_FLUSH_S
            if pending and (due or len(pending) >= _LOG_BATCH):
                await self._ship(subject, bytes(pending))
                pending.clear()
                last = time.monotonic()
            if done:
                return

    async def _ship(self, subject: str, data: bytes) -> None:
        self._log_seq += 1
        headers = {
            "Nats-Msg-Id": f"{self.ws}:{self.a.run_id}:{self.a.attempt}:{self._log_seq}",
            "Cairn-Attempt": str(self.a.attempt),
        }
        try:
            await self.client.conn.js.publish(subject, data, headers=headers, timeout=5)
        except Exception as exc:  # logs are best effort; the run file keeps all of them
            log.warning("log_ship_failed", run_id=self.a.run_id, error=repr(exc))

    async def _upload_outputs(self, src: Path) -> None:
        """``./outputs`` and the job's log become run files, fenced by the attempt."""
        files = [p for p in sorted((src / "outputs").rglob("*")) if p.is_file()]
        log_path = src / LOG_FILE
        named = [(p.relative_to(src).as_posix(), p) for p in files]
        if log_path.exists():
            named.append((LOG_FILE, log_path))
        for name, path in named:
            try:
                await upload_file(
                    self.client,
                    self.a.run_id,
                    name,
                    path,
                    show_progress=False,
                    attempt=self.a.attempt,
                )
            except StaleAttempt:
                self._stop(stale=True)
                return
            except CairnError as exc:
                self._write_log(f"cairn: could not upload {name}: {exc}\n".encode())
                log.warning("output_upload_failed", run_id=self.a.run_id, path=name, error=str(exc))


def _tail(path: Path, size: int = 16000) -> str:
    """The end of a log file (a replica's traceback)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _startable(argv: list[str], env: dict[str, str]) -> None:
    """Raise ``ValueError`` (as ``subprocess`` would) for what no program can be given: an
    argument or a variable's value with a NUL byte, a variable's name with ``=`` or NUL.
    That is the job's own fault; any other ``ValueError`` of a launch is the agent's (its
    attempt is lost, not the job failed)."""
    for arg in argv:
        if "\0" in arg:
            raise ValueError(f"embedded null byte in argument {arg!r}")
    for name, value in env.items():
        if "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"environment variable {name!r} cannot be given to a program")
