"""The async core of schedules (``ws.schedules``): each call is one command or query of the
schedules service."""

from __future__ import annotations

from typing import Any

from cairn.proto.commands import Accepted
from cairn.proto.schedules import (
    CatchUp,
    CreateSchedule,
    DeleteSchedule,
    DisableSchedule,
    EnableSchedule,
    GetSchedule,
    ListSchedules,
    Submission,
    Trigger,
    UpdateSchedule,
)
from cairn.sdk._session import Session, new_id

__all__ = ["AsyncSchedules"]


class AsyncSchedules:
    """``ws.schedules``."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def create(
        self,
        name: str,
        trigger: Trigger,
        submission: Submission,
        *,
        catch_up: CatchUp = "once",
        display_name: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Create schedule ``name`` submitting ``submission`` on ``trigger``; its record."""
        cmd = CreateSchedule(
            command_id=new_id(),
            name=name,
            trigger=trigger,
            submission=submission,
            catch_up=catch_up,
            display_name=display_name,
            description=description,
            tags=dict(tags or {}),
            disabled=not enabled,
        )
        reply = await self._session.send(cmd)
        return await self.get(name, min_seq=reply.seq)

    async def update(
        self,
        name: str,
        *,
        trigger: Trigger | None = None,
        submission: Submission | None = None,
        catch_up: CatchUp | None = None,
        display_name: str | None = None,
        description: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Change what is given (a new trigger counts from now); the schedule's record."""
        cmd = UpdateSchedule(
            command_id=new_id(),
            name=name,
            trigger=trigger,
            submission=submission,
            catch_up=catch_up,
            display_name=display_name,
            description=description,
            tags=tags,
        )
        reply = await self._session.send(cmd)
        return await self.get(name, min_seq=reply.seq)

    async def get(self, name: str, *, min_seq: int = 0, fires: int = 10) -> dict[str, Any]:
        """The schedule, its next due times and its last ``fires`` fires with their runs."""
        seq = max(min_seq, self._session.seen_seq)
        q = GetSchedule(name=name, min_seq=seq, fire_count=fires)
        data: dict[str, Any] = (await self._session.client.ask(q)).data
        return data

    async def list(self) -> list[dict[str, Any]]:
        q = ListSchedules(min_seq=self._session.seen_seq)
        rows: list[dict[str, Any]] = (await self._session.client.ask(q)).data
        return rows

    async def disable(self, name: str) -> Accepted:
        return await self._session.send(DisableSchedule(command_id=new_id(), name=name))

    async def enable(self, name: str) -> Accepted:
        return await self._session.send(EnableSchedule(command_id=new_id(), name=name))

    async def delete(self, name: str) -> Accepted:
        return await self._session.send(DeleteSchedule(command_id=new_id(), name=name))
