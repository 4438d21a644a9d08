"""Network namespaces for partition tests: one per cluster node, each joined to a bridge in
this namespace by a veth pair, so that the test's clients reach every node and a node's
links to its peers can be cut (``iptables`` inside the node's namespace drops what it sends
to and receives from them), or all of its traffic dropped (a black hole, clients included),
and healed, while the processes keep running.

Needs root, ``ip`` and ``iptables``: :func:`unavailable` says why it cannot, for a skip.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid

__all__ = ["Namespaces", "unavailable"]


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return f"network namespaces need root (this test runs as uid {os.geteuid()})"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"cfprobe{uuid.uuid4().hex[:6]}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "iptables", "-S")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a network namespace with iptables in it: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return None


class Namespaces:
    """``count`` namespaces on one bridge, on a /24 of 10.0.0.0/8 chosen at random (so that
    tests running beside each other do not collide)."""

    def __init__(self, count: int = 3) -> None:
        tag = uuid.uuid4().hex[:4]
        self.count = count
        self.bridge = f"cf{tag}br"
        self.names = [f"cf{tag}n{i}" for i in range(count)]
        self.veths = [f"cf{tag}v{i}" for i in range(count)]
        net = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        self.hosts = [f"{net}.{i + 1}" for i in range(count)]
        self.gateway = f"{net}.254"
        self.made = False

    def launcher(self, index: int) -> list[str]:
        """The argv prefix that runs a command inside namespace ``index``."""
        return ["ip", "netns", "exec", self.names[index]]

    def create(self) -> None:
        self.made = True
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for ns, veth, host in zip(self.names, self.veths, self.hosts, strict=True):
                peer = f"{veth}p"
                _run("ip", "netns", "add", ns)
                _run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
                _run("ip", "link", "set", peer, "netns", ns)
                _run("ip", "link", "set", veth, "master", self.bridge)
                _run("ip", "link", "set", veth, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                _run("ip", "-n", ns, "addr", "add", f"{host}/24", "dev", peer)
                _run("ip", "-n", ns, "link", "set", peer, "up")
        except BaseException:
            self.destroy()
            raise

    def cut(self, index: int) -> None:
        """Drop everything between node ``index`` and the other nodes, both ways (the clients
        in this namespace still reach it)."""
        ns = self.names[index]
        for j, other in enumerate(self.hosts):
            if j == index:
                continue
            _run("ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-s", other, "-j", "DROP")
            _run("ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-d", other, "-j", "DROP")

    def black_hole(self, index: int) -> None:
        """Drop everything node ``index`` sends and receives but its loopback: its peers and
        every client alike. Nothing is refused or reset: connections to it stay open and go
        silent, new ones get no answer to their SYN (the process keeps running)."""
        ns = self.names[index]
        _run("ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "!", "-i", "lo", "-j", "DROP")
        _run("ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "!", "-o", "lo", "-j", "DROP")

    def heal(self, index: int) -> None:
        _run("ip", "netns", "exec", self.names[index], "iptables", "-F")

    def destroy(self) -> None:
        """Remove the namespaces (their veth ends go with them, and so the pairs) and the
        bridge; what is already gone is passed over."""
        if not self.made:
            return
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        for veth in self.veths:
            subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=20)
        self.made = False
