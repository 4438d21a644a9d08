"""The audit service: follows EVENTS, chains each workspace's events and signs a checkpoint
of the chain into the log every ``audit_every_events`` events of the workspace, or
``audit_every_s`` seconds after the first one not yet signed (docs/design.md, *Tamper
evidence*).

It keeps no state the log cannot rebuild: at start it reads the checkpoints back and reads
EVENTS from its low-water mark (a hint in ``<state>/audit-position.json``, checked against
the checkpoints; sequence 1 without it), passing over what they cover. It also writes
``<state>/audit-heads.json``, the last checkpoint per workspace: ``cairn audit verify``'s
default anchor. A checkpoint is appended on
``cairn.ev.<ws>.audit.chain`` with the subject CAS (the previous checkpoint's sequence) and
``Nats-Msg-Id: audit-<ws>-<up_to_seq>``: two replicas, or a restart, record the same window
once, and a replica that cut another window reloads the one recorded and goes on from it.
Ed25519 signatures are deterministic, so the same window signs to the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cairn.audit import (
    WorkspaceChain,
    event_digest,
    heads_path,
    key_id_of,
    load_or_create_signing_key,
    public_key_hex,
    read_batch,
    read_raw,
    split_subject,
    verify_signature,
)
from cairn.bus import Connection, EventStore
from cairn.errors import CairnError, ConcurrencyConflict
from cairn.log import get_logger
from cairn.proto.events import ChainCheckpointed, Envelope, Event, decode_envelope
from cairn.proto.subjects import AUDIT_CHAINS, AUDIT_KEY, AUDIT_KIND, EVENTS_ALL, audit_chain
from cairn.rpc import SERVICE_ACTOR
from cairn.settings import Settings

__all__ = ["AuditService"]

log = get_logger("cairn.audit")
_BATCH = 512


class AuditService:
    name = "audit"

    def __init__(self, conn: Connection, settings: Settings, *, poll_s: float = 0.2) -> None:
        self.conn = conn
        self.settings = settings
        self.store = EventStore(conn)
        self.every_events = max(1, settings.audit_every_events)
        self.every_s = settings.audit_every_s
        self.poll_s = poll_s
        self.key = load_or_create_signing_key(settings)
        self.public = self.key.public_key()
        self.chains: dict[str, WorkspaceChain] = {}
        self.position = 0  # the last EVENTS sequence read
        self._heads_changed = False
        self._key_sub: Any = None

    def _chain(self, ws: str) -> WorkspaceChain:
        found = self.chains.get(ws)
        if found is None:
            found = self.chains[ws] = WorkspaceChain(ws)
        return found

    async def start(self) -> None:
        """The checkpoints recorded so far: each workspace's chain goes on from its last; then
        EVENTS is read from where every earlier event was signed (the saved low-water mark,
        when the log still holds the checkpoints it was saved with; else sequence 1)."""
        async for raw in read_raw(self.conn, AUDIT_CHAINS):
            self._observe_checkpoint(raw.seq, raw.subject, raw.data)
        settings = self.settings
        settings.state_path.mkdir(parents=True, exist_ok=True)
        self.position = self._resume_from() - 1
        answer = json.dumps(
            {"key_id": key_id_of(self.public), "public_key": public_key_hex(self.public)}
        ).encode()

        async def on_key(msg: Any) -> None:
            await msg.respond(answer)

        self._key_sub = await self.conn.nc.subscribe(AUDIT_KEY, cb=on_key)
        log.info(
            "audit_started",
            workspaces=len(self.chains),
            every=self.every_events,
            read_from=self.position + 1,
        )

    def _observe_checkpoint(self, seq: int, subject: str, data: bytes) -> None:
        """A message on a chain's subject. Whatever it is, the next checkpoint's CAS is its
        sequence; one that is not a checkpoint of this chain is logged (and is a finding of
        ``cairn audit verify``), and the chain goes on after it."""
        chain = self._chain(subject.split(".")[2])
        chain.checkpoint_seq = max(chain.checkpoint_seq, seq)
        try:
            cp = decode_envelope(data).data
        except Exception as exc:
            log.error("audit_checkpoint_unreadable", seq=seq, error=str(exc))
            return
        if not isinstance(cp, ChainCheckpointed) or cp.workspace != chain.workspace:
            log.error("audit_checkpoint_misplaced", seq=seq, subject=subject)
            return
        if not verify_signature(self.public, cp):  # not this key's: never continued from
            log.error("audit_checkpoint_not_ours", seq=seq, subject=subject, key_id=cp.key_id)
            return
        if cp.index <= chain.index:
            return  # ours, or one adopted already
        ws = chain.workspace
        if cp.index != chain.index + 1:
            log.error("audit_checkpoint_gap", workspace=ws, index=cp.index, have=chain.index)
        if not chain.adopt(cp, seq):
            log.error("audit_chain_disagrees", workspace=ws, index=cp.index, seq=seq)
        self._heads_changed = True

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._follow(stop)
        finally:
            if self._key_sub is not None:
                with contextlib.suppress(Exception):
                    await self._key_sub.unsubscribe()

    async def _follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                more = await self._step()
            except CairnError as exc:  # the server away: read again after a pause
                log.warning("audit_read_failed", error=exc.message, position=self.position)
                more = False
            if self._heads_changed:
                self._write_heads()
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)

    async def _step(self) -> bool:
        """Read one batch, chain it, sign what is due; whether more was waiting."""
        got, more = await read_batch(self.conn, EVENTS_ALL, self.position + 1, _BATCH)
        now = time.monotonic()
        for raw in got:
            self.position = raw.seq
            parts = raw.subject.split(".")
            if len(parts) == 5 and parts[3] == AUDIT_KIND:
                self._observe_checkpoint(raw.seq, raw.subject, raw.data)
                continue
            named = split_subject(raw.subject)
            if named is None:
                continue
            chain = self._chain(named[0])
            if raw.seq <= chain.up_to_seq:
                continue  # signed already (read again after a restart)
            chain.add(raw.seq, named[1], event_digest(raw.subject, raw.msg_id, raw.data), now)
            if len(chain.pending.entries) >= self.every_events:
                await self._checkpoint(chain)
        for chain in list(self.chains.values()):
            while chain.due(time.monotonic(), self.every_events, self.every_s):
                if not await self._checkpoint(chain):
                    break
        return more

    async def _checkpoint(self, chain: WorkspaceChain) -> bool:
        """Sign and append the next checkpoint of ``chain``; False when another writer's
        checkpoint was found instead (adopted: the caller looks again)."""
        cp = chain.cut(self.key, self.every_events)
        ws = chain.workspace
        ident = f"audit-{ws}-{cp.up_to_seq}"
        envelope: Envelope[Event] = Envelope(
            event_id=hashlib.sha256(ident.encode()).hexdigest()[:32],
            type=type(cp).__name__,
            schema_version=cp.VERSION,
            workspace=ws,
            aggregate_kind=AUDIT_KIND,
            aggregate_id="chain",
            timestamp=datetime.now(UTC),
            actor=SERVICE_ACTOR,
            causation_id=ident,
            correlation_id=ident,
            data=cp,
        )
        try:
            result = await self.store.append(
                audit_chain(ws), [envelope], expected_seq=chain.checkpoint_seq, msg_id=ident
            )
        except ConcurrencyConflict:  # another replica recorded its window first
            await self._reload(chain)
            log.info("audit_checkpoint_taken", workspace=ws, index=chain.index)
            return False
        if result.duplicate:  # recorded before (a restart inside the dedupe window)
            await self._reload(chain)
            return chain.index >= cp.index
        chain.adopt(cp, result.seq)
        self._heads_changed = True
        log.info(
            "audit_checkpoint",
            workspace=ws,
            index=cp.index,
            up_to_seq=cp.up_to_seq,
            events=len(cp.events),
        )
        return True

    async def _reload(self, chain: WorkspaceChain) -> None:
        subject = audit_chain(chain.workspace)
        async for raw in read_raw(self.conn, subject, chain.checkpoint_seq + 1):
            self._observe_checkpoint(raw.seq, raw.subject, raw.data)

    def _position_path(self) -> Path:
        return self.settings.state_path / "audit-position.json"

    def _resume_from(self) -> int:
        """The saved low-water mark: every event before it was in a checkpoint when it was
        saved. A hint only: used when the log still holds, per workspace, the checkpoint the
        hint was saved with (the same index and chain hash, or a later one); else 1."""
        path = self._position_path()
        try:
            saved = json.loads(path.read_text())
            read_from = int(saved["read_from"])
            heads = {ws: (int(h[0]), str(h[1])) for ws, h in saved["heads"].items()}
        except FileNotFoundError:
            return 1
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            log.warning("audit_position_unreadable", path=str(path), error=str(exc))
            return 1
        for ws, (index, chain_hash) in heads.items():
            chain = self.chains.get(ws)
            if (
                chain is None
                or chain.index < index
                or (chain.index == index and chain.chain != chain_hash)
            ):
                log.warning("audit_position_stale", workspace=ws, index=index)
                return 1
        return max(1, read_from)

    def _write_position(self) -> None:
        """The low-water mark (the first event not yet in a checkpoint, of any workspace) and
        the heads it holds for, so that a restart need not read EVENTS from sequence 1."""
        firsts = [c.pending.entries[0].seq for c in self.chains.values() if c.pending.entries]
        body = {
            "read_from": min([*firsts, self.position + 1]),
            "heads": {ws: [c.index, c.chain] for ws, c in self.chains.items() if c.index},
        }
        path = self._position_path()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(body) + "\n")
        os.replace(tmp, path)

    def _write_heads(self) -> None:
        heads = {
            ws: {"index": c.index, "up_to_seq": c.up_to_seq, "chain": c.chain}
            for ws, c in sorted(self.chains.items())
            if c.index
        }
        path = heads_path(self.settings)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(heads, indent=1) + "\n")
            os.replace(tmp, path)
            self._write_position()
        except OSError as exc:  # the anchor is a convenience: signing goes on without it
            log.error("audit_heads_unwritable", path=str(path), error=str(exc))
        self._heads_changed = False
