"""The artifact service: run files in, content-addressed blobs out.

Uploads arrive in chunks on a subject only this instance listens to, are hashed as they are
written to a temporary file, and on commit are checked against the client's digest, stored once
per content in the blob store, and recorded as ``ArtifactCommitted`` on the run. A path is
validated before anything is written, so a refused path leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from cairn import lookup
from cairn.bus import AggregateCache, CommandContext, Connection, EventStore, execute
from cairn.domain import run as runs
from cairn.errors import CairnError, InvalidInput, NotFound, PayloadTooLarge
from cairn.log import get_logger
from cairn.proto import subjects
from cairn.proto.artifacts import CHUNK_BYTES, INLINE_BYTES, CommitUpload, OpenUpload, ReadBlob
from cairn.proto.commands import Accepted, ErrorReply, Opened, QueryResult
from cairn.proto.paths import validate_run_path
from cairn.rpc import RawReply, Request, Responder, actor_of
from cairn.settings import Settings
from cairn.storage import BlobStore, LocalBlobStore, S3BlobStore

__all__ = ["MAX_READ_BYTES", "ArtifactsService"]

log = get_logger("cairn.artifacts")
MAX_READ_BYTES = 512 * 1024
_encoder = msgspec.json.Encoder()
_commit_decoder = msgspec.json.Decoder(CommitUpload)


class _Upload:
    def __init__(
        self, workspace: str, owner: tuple[str, str], path: str, size: int, tmp: Path
    ) -> None:
        self.workspace, self.path, self.size, self.tmp = workspace, path, size, tmp
        self.kind, self.owner = owner  # ("run", run id) or ("staging", staging id)
        self.file = open(tmp, "wb")
        self.hash = hashlib.sha256()
        self.received = 0
        self.touched = time.monotonic()
        self.attempt = 0  # a job attempt's upload is refused once that attempt is stale

    def write(self, offset: int, data: bytes) -> int:
        if offset != self.received:
            raise InvalidInput(f"chunk at offset {offset}, expected {self.received}")
        if self.received + len(data) > self.size:
            raise PayloadTooLarge(f"more than the {self.size} bytes announced")
        self.file.write(data)
        self.hash.update(data)
        self.received += len(data)
        self.touched = time.monotonic()
        return self.received

    def finish(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class ArtifactsService:
    name = "artifacts"

    def __init__(self, conn: Connection, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.instance = uuid.uuid4().hex[:16]
        self.store = EventStore(conn)
        self.cache = AggregateCache.shared(self.store)
        self.blobs: BlobStore | None = None
        self.uploads_dir = settings.state_path / "uploads"
        self.uploads: dict[str, _Upload] = {}
        self.idle_s = 300.0
        self.commands = Responder(
            conn,
            subjects=[subjects.command_filter("artifact")],
            queue="artifacts",
            types=(OpenUpload,),
            routes={OpenUpload.VERB: self._open},
        )
        self.blob_reads = Responder(
            conn,
            subjects=[subjects.query_filter("blob")],
            queue="artifacts",
            types=(ReadBlob,),
            routes={ReadBlob.NAME: self._read_blob},
        )
        self._session_sub: Any = None

    async def start(self) -> None:
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.uploads_dir.iterdir():  # from a crashed earlier run
            leftover.unlink()
        s3 = self.settings.artifact_s3
        self.blobs = (
            await S3BlobStore.open(s3)
            if s3 is not None
            else LocalBlobStore(self.settings.artifacts_path)
        )
        self._session_sub = await self.conn.nc.subscribe(
            subjects.upload_sessions(self.instance), cb=self._on_session
        )
        await self.commands.start()
        await self.blob_reads.start()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 30)
            except TimeoutError:
                self._expire()
        await self.commands.stop()
        await self.blob_reads.stop()
        if self._session_sub is not None:
            await self._session_sub.unsubscribe()
        for upload in self.uploads.values():
            upload.finish()
        self.uploads.clear()
        if self.blobs is not None:
            await self.blobs.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, u in self.uploads.items() if now - u.touched > self.idle_s]:
            self.uploads.pop(sid).finish()
            log.info("upload_expired", session=sid)

    # -- upload ---------------------------------------------------------------------------

    async def _open(self, req: Request) -> Opened | Accepted:
        cmd: OpenUpload = req.body
        path = validate_run_path(cmd.path)
        if not 0 <= cmd.size <= self.settings.max_artifact_bytes:
            raise PayloadTooLarge(
                f"a run file may hold 0 to {self.settings.max_artifact_bytes} bytes"
            )
        if not cmd.staging:
            await lookup.run_state(self.cache, req.workspace, cmd.run_id)
        session = uuid.uuid4().hex
        tmp = self.uploads_dir / session
        owner = (runs.STAGING.kind if cmd.staging else runs.KIND, cmd.run_id)
        upload = _Upload(req.workspace, owner, path, cmd.size, tmp)
        upload.attempt = cmd.attempt
        if cmd.data is not None:
            return await self._inline(upload, cmd.data, req.context())
        self.uploads[session] = upload
        return Opened(
            session_id=session,
            subject=subjects.upload_session(self.instance, session),
            chunk_bytes=CHUNK_BYTES,
        )

    async def _inline(self, upload: _Upload, data: bytes, ctx: CommandContext) -> Accepted:
        """A small file sent inside its ``OpenUpload``: stored and committed at once."""
        try:
            if len(data) > INLINE_BYTES:
                raise PayloadTooLarge(f"at most {INLINE_BYTES} bytes travel inside the command")
            upload.write(0, data)
            if upload.received != upload.size:
                raise InvalidInput(f"received {upload.received} of {upload.size} bytes")
            return await self._record(upload, "sha256:" + upload.hash.hexdigest(), ctx)
        finally:
            upload.finish()

    async def _on_session(self, msg: Any) -> None:
        tokens = msg.subject.split(".")
        session = tokens[3] if len(tokens) > 3 else ""
        try:
            upload = self.uploads.get(session)
            if upload is None:
                raise NotFound("no such upload session (expired, finished or on another instance)")
            if len(tokens) == 5 and tokens[4] == "commit":
                reply: Any = await self._commit(session, upload, msg)
            else:
                offset = int((msg.headers or {}).get("Cairn-Offset", "-1"))
                reply = QueryResult(seq=0, data=upload.write(offset, msg.data))
        except CairnError as exc:
            reply = ErrorReply(code=exc.code, message=exc.message)
            if session in self.uploads and not isinstance(exc, NotFound):
                self.uploads.pop(session).finish()
        except (ValueError, msgspec.DecodeError) as exc:
            reply = ErrorReply(code="invalid_input", message=str(exc))
        if msg.reply:
            await msg.respond(_encoder.encode(reply))

    async def _commit(self, session: str, upload: _Upload, msg: Any) -> Any:
        cmd = _commit_decoder.decode(msg.data)
        digest = "sha256:" + upload.hash.hexdigest()
        if upload.received != upload.size:
            raise InvalidInput(f"received {upload.received} of {upload.size} bytes")
        if cmd.digest != digest:
            raise InvalidInput(f"digest mismatch: the bytes received hash to {digest}")
        self.uploads.pop(session)
        try:
            ctx = CommandContext(
                workspace=upload.workspace,
                command_id=cmd.command_id,
                actor=actor_of(msg.headers),
                correlation_id=cmd.correlation_id,
            )
            return await self._record(upload, digest, ctx)
        finally:
            upload.finish()

    async def _record(self, upload: _Upload, digest: str, ctx: CommandContext) -> Accepted:
        """Store the received file as blob ``digest`` and append ``ArtifactCommitted``."""
        upload.file.close()
        assert self.blobs is not None
        await self.blobs.put_file(digest, upload.tmp)

        commit = runs.CommitArtifact(
            run_id=upload.owner,
            path=upload.path,
            digest=digest,
            size=upload.size,
            attempt=upload.attempt,
        )
        if upload.kind == runs.STAGING.kind:
            return await execute(ctx, runs.STAGING, upload.owner, commit, cache=self.cache)
        return await execute(ctx, runs.AGGREGATE, upload.owner, commit, cache=self.cache)

    # -- download -------------------------------------------------------------------------

    async def _read_blob(self, req: Request) -> RawReply:
        q: ReadBlob = req.body
        if q.offset < 0 or q.length < 0:
            raise InvalidInput("offset and length must be >= 0")
        assert self.blobs is not None
        return RawReply(await self.blobs.read(q.digest, q.offset, min(q.length, MAX_READ_BYTES)))
