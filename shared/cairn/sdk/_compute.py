"""Compute targets with the Azure ML v1 names: ``ComputeTarget``, ``AmlCompute`` and its
``provisioning_configuration``, ``ComputeTargetException``.

A Cairn compute target is a name that jobs are queued on and agents serve: creating one
provisions no machine. Its agents are processes that you start on the machines you have
(``cairn agent --compute NAME``); ``max_nodes`` and ``vm_size`` are recorded for the people
who start them, and ``wait_for_completion(show_output=True)`` says so.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, Literal

from cairn.errors import InvalidInput, NotFound
from cairn.proto.assets import ComputeSpec
from cairn.sdk._refusals import inherent, refuses
from cairn.sdk._runtime import WorkspaceBase

__all__ = [
    "AmlCompute",
    "AmlComputeProvisioningConfiguration",
    "ComputeTarget",
    "ComputeTargetException",
]

ComputeKind = Literal["local", "cluster", "instance", "attached"]

_NO_MACHINES = "Cairn provisions no machines: an agent is a process you start with `cairn agent`"


class ComputeTargetException(NotFound):
    """A compute target that does not exist (``ComputeTarget(workspace=ws, name=...)``)."""

    code = "compute_target_not_found"


class AmlComputeProvisioningConfiguration:
    """What ``AmlCompute.provisioning_configuration`` returns: the spec of a cluster."""

    def __init__(self, spec: ComputeSpec) -> None:
        self.spec = spec
        self.vm_size, self.min_nodes, self.max_nodes = spec.vm_size, spec.min_nodes, spec.max_nodes

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(vm_size={self.vm_size!r}, max_nodes={self.max_nodes})"


class ComputeTarget:
    """A compute target: ``local``, a cluster (a pool of agents), an instance, an attached
    machine. Creating and deleting needs the compute-operator role. ``ComputeTarget(ws,
    name)`` of one that does not exist raises ``ComputeTargetException``; ``as_of=`` (a time,
    or a stream sequence) is the target as the log held it then."""

    def __init__(
        self,
        workspace: WorkspaceBase,
        name: str,
        _data: dict[str, Any] | None = None,
        *,
        as_of: datetime | int | None = None,
    ) -> None:
        self.workspace, self.name = workspace, name
        if _data is None:
            try:
                found = workspace.core.assets.get("compute", name, as_of=as_of)
                _data = workspace._run(found)
            except NotFound as exc:
                raise ComputeTargetException(
                    f"compute target {name!r} does not exist in workspace {workspace.name!r}"
                    f" ({exc.message})"
                ) from exc
        spec = _data["spec"]
        self.type, self.vm_size, self.labels = spec["kind"], spec.get("vm_size"), spec["labels"]
        self.min_nodes, self.max_nodes = spec["min_nodes"], spec["max_nodes"]
        self.provisioning_state = "Succeeded"

    @staticmethod
    def create(
        workspace: WorkspaceBase,
        name: str,
        provisioning_configuration: AmlComputeProvisioningConfiguration | None = None,
        *,
        kind: ComputeKind = "cluster",
        min_nodes: int = 0,
        max_nodes: int = 1,
        vm_size: str | None = None,
        labels: builtins.list[str] | None = None,
    ) -> ComputeTarget:
        """Create compute target ``name`` from a provisioning configuration (Azure ML v1) or
        from ``kind``, ``max_nodes``... (not both)."""
        if provisioning_configuration is not None:
            if (kind, min_nodes, max_nodes, vm_size, labels) != ("cluster", 0, 1, None, None):
                raise InvalidInput(
                    "ComputeTarget.create: give a provisioning configuration or kind=,"
                    " min_nodes=, max_nodes=, vm_size=, labels=, not both"
                )
            spec = provisioning_configuration.spec
        else:
            spec = ComputeSpec(
                kind=kind,
                min_nodes=min_nodes,
                max_nodes=max_nodes,
                vm_size=vm_size,
                labels=labels or [],
            )
        created = workspace._run(workspace.core.assets.create_compute(name, spec))
        return ComputeTarget(workspace, name, _data=created)

    @refuses(min_node_count=f"{_NO_MACHINES}; wait for them with `cairn agent list`")
    @inherent(timeout_in_minutes="a compute target exists once create() has returned")
    def wait_for_completion(
        self,
        show_output: bool = False,
        min_node_count: int | None = None,
        timeout_in_minutes: int = 20,
    ) -> None:
        """The target exists once ``create`` returns; with ``show_output`` this says how to
        start the agents that serve it."""
        if show_output:
            print(self.how_to_serve())

    def how_to_serve(self) -> str:
        size = f" ({self.vm_size})" if self.vm_size else ""
        return (
            f"compute target {self.name!r} is ready. Cairn provisions no machines: start its"
            f" agents on up to {self.max_nodes} machine(s){size} with:\n"
            f"    cairn agent --compute {self.name}"
        )

    def get_status(self) -> str:
        return self.provisioning_state

    def delete(self) -> None:
        self.workspace._run(self.workspace.core.assets.delete_compute(self.name))

    @staticmethod
    def list(
        workspace: WorkspaceBase, *, as_of: datetime | int | None = None
    ) -> dict[str, ComputeTarget]:
        """Every compute target; ``as_of`` (a time, or a stream sequence): those the log held
        then, as they were then."""
        rows = workspace._run(workspace.core.assets.list("compute", as_of=as_of))
        return {r["name"]: ComputeTarget(workspace, r["name"], _data=r) for r in rows}

    def __repr__(self) -> str:
        return f"ComputeTarget(name={self.name!r}, type={self.type!r})"


class AmlCompute(ComputeTarget):
    """An Azure ML cluster is a Cairn ``cluster`` compute target: a pool of agents."""

    @staticmethod
    @refuses(
        vm_priority=f"{_NO_MACHINES}, on the machines you choose",
        idle_seconds_before_scaledown=f"{_NO_MACHINES}; it runs until you stop it",
        admin_username=_NO_MACHINES,
        admin_user_password=_NO_MACHINES,
        admin_user_ssh_key=_NO_MACHINES,
        vnet_resourcegroup_name=_NO_MACHINES,
        vnet_name=_NO_MACHINES,
        subnet_name=_NO_MACHINES,
        location=_NO_MACHINES,
        tags="compute targets carry labels= (names agents advertise), not tags",
        description="compute targets have no description",
    )
    def provisioning_configuration(
        vm_size: str = "",
        vm_priority: str = "dedicated",
        min_nodes: int = 0,
        max_nodes: int | None = None,
        idle_seconds_before_scaledown: int | None = None,
        admin_username: str | None = None,
        admin_user_password: str | None = None,
        admin_user_ssh_key: str | None = None,
        vnet_resourcegroup_name: str | None = None,
        vnet_name: str | None = None,
        subnet_name: str | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
        location: str | None = None,
        *,
        labels: builtins.list[str] | None = None,
    ) -> AmlComputeProvisioningConfiguration:
        """A cluster's spec: ``vm_size`` and ``max_nodes`` are recorded for the people who
        start its agents; ``labels`` (Cairn) name what its agents advertise."""
        spec = ComputeSpec(
            kind="cluster",
            min_nodes=min_nodes,
            max_nodes=max_nodes if max_nodes is not None else max(min_nodes, 1),
            vm_size=vm_size or None,
            labels=labels or [],
        )
        return AmlComputeProvisioningConfiguration(spec)
