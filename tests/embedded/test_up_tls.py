"""``cairn up --tls``: certificates under ``<home>/tls``, a server that requires TLS, and a
config.json that names the CA, so that the SDK and the commands work unchanged."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from cairn.sdk import Experiment, Workspace
from tests.embedded.test_up import CAIRN, Up


def test_up_tls_serves_the_sdk_and_the_cli_over_tls(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    up = Up(home, port, "--tls", "--local-slots", "0")
    ups.append(up.proc)
    up.wait_for("cairn is up", timeout=10)

    config = json.loads((home / "config.json").read_text())
    assert config["nats_url"] == f"tls://127.0.0.1:{port}"
    assert config["tls_ca"] == str(home / "tls" / "ca.pem") and "tls_cert" not in config
    for key in ("ca-key.pem", "server-key.pem"):
        assert stat.S_IMODE((home / "tls" / key).stat().st_mode) == 0o600, key
    conf = (home / "nats" / "nats.conf").read_text()
    assert "tls {" in conf and "verify: false" in conf

    ws = Workspace.from_config(home / "config.json")
    run = Experiment(ws, "over-tls").start_logging(display_name="tls")
    for step in range(3):
        run.log("loss", 1 / (step + 1))
    run.complete()
    assert run.get_status() == "Completed"
    assert run.get_metrics()["loss"][-1] == 1 / 3

    env = {**os.environ, "CAIRN_HOME": str(home)}
    status = subprocess.run(
        [*CAIRN, "status", "--json"], env=env, capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["server"]["url"].startswith("tls://")
    assert up.interrupt() == 0


def test_up_tls_verify_gives_its_clients_a_certificate_and_refuses_others(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    up = Up(home, port, "--tls-verify", "--local-slots", "0")
    ups.append(up.proc)
    up.wait_for("cairn is up", timeout=10)
    config = json.loads((home / "config.json").read_text())
    assert config["tls_cert"] == str(home / "tls" / "client-cairn-local.pem")
    assert stat.S_IMODE(Path(config["tls_key"]).stat().st_mode) == 0o600
    assert "verify: true" in (home / "nats" / "nats.conf").read_text()

    env = {**os.environ, "CAIRN_HOME": str(home)}
    status = subprocess.run(
        [*CAIRN, "status", "--json"], env=env, capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 0, status.stderr
    without = {**env, "CAIRN_CONFIG": str(home / "no-cert.json")}
    (home / "no-cert.json").write_text(
        json.dumps({k: v for k, v in config.items() if k not in ("tls_cert", "tls_key")})
    )
    refused = subprocess.run(
        [*CAIRN, "status"], env=without, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 1 and "requires a client certificate" in refused.stderr
    assert up.interrupt() == 0
