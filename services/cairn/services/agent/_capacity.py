"""What an agent offers: CPUs, memory, GPUs (through ``nvidia-smi`` when it exists), labels."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import msgspec

from cairn.log import get_logger

__all__ = ["AgentInfo", "Gpu", "detect", "detect_gpus"]

log = get_logger("cairn.agent")


class Gpu(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    uuid: str
    name: str
    memory_mib: int


class AgentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The value of the agent's key in the ``cairn_agents`` bucket, rewritten every heartbeat."""

    agent_id: str
    compute: str
    hostname: str
    pid: int
    cpus: int
    memory_bytes: int
    gpus: list[Gpu]
    labels: list[str]
    slots: int
    free_slots: int
    started_at: float
    heartbeat_at: float
    #: the workspace whose jobs it runs ("" from an agent that did not say)
    workspace: str = ""
    #: the CPython versions (``"3.11"``) a job may pin here: installed, or downloadable
    #: where the agent's ``python_downloads`` is on (the scheduler checks pins against them)
    pythons: list[str] = msgspec.field(default_factory=list)


def detect_gpus(timeout_s: float = 10.0) -> list[Gpu]:
    """The GPUs ``nvidia-smi`` reports, or none when it is absent or fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    query = "--query-gpu=index,uuid,name,memory.total"
    try:
        out = subprocess.run(
            [binary, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia_smi_failed", error=str(exc))
        return []
    gpus = []
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4:
            continue
        try:
            memory_mib = int(float(fields[3]))
            gpus.append(
                Gpu(index=int(fields[0]), uuid=fields[1], name=fields[2], memory_mib=memory_mib)
            )
        except ValueError:
            log.warning("nvidia_smi_line_skipped", line=line[:200])
    return gpus


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 0


def detect(
    agent_id: str,
    compute: str,
    slots: int,
    labels: list[str],
    started_at: float,
    now: float,
    *,
    free_slots: int | None = None,
    gpus: list[Gpu] | None = None,
    workspace: str = "",
    pythons: list[str] | None = None,
) -> AgentInfo:
    """The agent's key; ``gpus`` when the caller found them already (else ``nvidia-smi`` is
    asked now)."""
    gpus = detect_gpus() if gpus is None else gpus
    all_labels = sorted(set(labels) | ({"gpu"} if gpus else set()))
    return AgentInfo(
        agent_id=agent_id,
        compute=compute,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        cpus=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        gpus=gpus,
        labels=all_labels,
        slots=slots,
        free_slots=slots if free_slots is None else free_slots,
        started_at=started_at,
        heartbeat_at=now,
        workspace=workspace,
        pythons=pythons or [],
    )
