"""The Python SDK: an async core (``async with connect() as ws``)."""

from cairn.sdk._async import AsyncExperiment, AsyncRun, AsyncWorkspace, connect, new_id

__all__ = ["AsyncExperiment", "AsyncRun", "AsyncWorkspace", "connect", "new_id"]
