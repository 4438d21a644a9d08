"""``Keyvault`` with the Azure ML v1 names: a facade over ``ws.secrets``
(``ws.get_default_keyvault()``; ``run.get_secret(name)`` reads as the run)."""

from __future__ import annotations

import builtins
from typing import Any

from cairn.sdk._runtime import WorkspaceBase

__all__ = ["Keyvault"]


class Keyvault:
    """The workspace's secrets. Values are sealed by the registry (the workspace key) and
    every read is recorded (who, which version, from which run), never the value. Names are
    1-127 letters, digits and '-'; values at most 25 KiB of UTF-8."""

    def __init__(self, workspace: WorkspaceBase) -> None:
        self.workspace = workspace

    def set_secret(self, name: str, value: str) -> None:
        self.workspace._run(self.workspace.core.secrets.set(name, value))

    def set_secrets(self, secrets_batch: dict[str, str]) -> None:
        self.workspace._run(self.workspace.core.secrets.set_many(secrets_batch))

    def get_secret(self, name: str) -> str:
        return self.workspace._run(self.workspace.core.secrets.get(name))

    def get_secrets(self, secrets: builtins.list[str]) -> dict[str, str]:
        return self.workspace._run(self.workspace.core.secrets.get_many(secrets))

    def list_secrets(self) -> builtins.list[dict[str, Any]]:
        """Each secret as ``{"name": ...}`` (as Azure answers), with its version, key id and
        when and by whom it was last set and read; never a value."""
        return self.workspace._run(self.workspace.core.secrets.list())

    def delete_secret(self, name: str) -> None:
        self.workspace._run(self.workspace.core.secrets.delete(name))

    def delete_secrets(self, secrets: builtins.list[str]) -> None:
        for name in secrets:
            self.delete_secret(name)

    def rotate_key(self, keep_old_keys: bool = False) -> None:
        """Not in Azure's Keyvault: a new workspace key, every secret and datastore credential
        sealed again under it, the old keys dropped (unless ``keep_old_keys``)."""
        self.workspace._run(self.workspace.core.secrets.rotate_key(keep_old_keys=keep_old_keys))

    def __repr__(self) -> str:
        return f"Keyvault(workspace={self.workspace.name!r})"
