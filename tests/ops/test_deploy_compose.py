"""compose/compose.yaml: a Compose implementation accepts it (``config``), and the file it
resolves to runs what the deployment promises; compose/bootstrap.py writes settings files
that Cairn reads."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cairn.audit import load_or_create_signing_key
from cairn.embedded._auth import Credentials
from cairn.embedded._up import all_services
from cairn.settings import load_settings
from tests.ops.compose_tool import compose_command

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "compose.yaml"
#: every service, the agents and the CLI helper: the profiles that are off by default too
PROFILES = ["--profile", "docker-jobs", "--profile", "tools"]


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as a Compose implementation reads it: anchors merged, variables given
    their defaults, checked against the Compose Specification's schema."""
    found = compose_command()
    if isinstance(found, str):
        print(f"no Compose implementation: {found}")
        pytest.skip(found)
    argv, version = found
    print(f"checked with {' '.join(argv)}: {version}")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(ROOT)}
    done = subprocess.run(
        [*argv, "-f", str(COMPOSE), *PROFILES, "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def _services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = config["services"]
    return services


def _mounts(svc: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """A service's mounts: target -> (source, read-only), whichever way the implementation
    writes them (Compose v1: ``source:target:mode`` strings; v2: mappings)."""
    found = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            found[target] = (source, mode == ["ro"])
        else:
            found[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
    return found


def _long_running(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _services(config).items() if svc.get("restart") != "no"}


def test_every_service_runs_twice_with_its_health(resolved: dict[str, Any]) -> None:
    services = _services(resolved)
    for name in [*all_services(), "gateway"]:
        assert name in services, f"compose.yaml has no {name}"
        svc = services[name]
        assert svc["deploy"]["replicas"] == 2, name
        assert svc["command"][:3] == ["cairn", "serve", name]
        probe = " ".join(svc["healthcheck"]["test"])
        assert "/readyz" in probe, name
        if name != "gateway":
            assert svc["command"][3:] == ["--ops-port", "9464", "--ops-host", "0.0.0.0"]
            assert "127.0.0.1:9464/readyz" in probe


def test_three_nats_nodes_each_with_its_volume_after_init(resolved: dict[str, Any]) -> None:
    services = _services(resolved)
    for i in (1, 2, 3):
        node = services[f"nats-{i}"]
        assert node["command"] == ["nats-server", "-c", f"/var/lib/cairn/cluster/n{i}/nats.conf"]
        assert _mounts(node) == {f"/var/lib/cairn/cluster/n{i}": (f"nats-{i}", False)}
        assert node["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert f"127.0.0.1:{8221 + i}/healthz" in " ".join(node["healthcheck"]["test"])
    init = services["init"]
    assert init["restart"] == "no"
    assert "cairn cluster init --nodes 3" in " ".join(init["command"])


def test_everything_that_runs_has_a_health_check(resolved: dict[str, Any]) -> None:
    for name, svc in _long_running(resolved).items():
        if name == "cli":
            continue
        assert "healthcheck" in svc, name
        needs = svc.get("depends_on", {})
        assert needs.get("init", {}).get("condition") == "service_completed_successfully", name


def test_tracking_provisions_the_streams_before_the_rest_start(resolved: dict[str, Any]) -> None:
    services = _services(resolved)
    assert "tracking" not in services["tracking"]["depends_on"]
    for name in [*all_services(), "gateway", "agent", "agent-docker"]:
        if name != "tracking":
            assert services[name]["depends_on"]["tracking"]["condition"] == "service_healthy"


def test_two_agents_and_only_the_docker_one_holds_the_socket(resolved: dict[str, Any]) -> None:
    services = _services(resolved)
    agents = {name: svc for name, svc in services.items() if "agent" in svc["command"]}
    assert set(agents) == {"agent", "agent-docker"}
    assert "--backend" not in agents["agent"]["command"]
    assert agents["agent-docker"]["command"][3:5] == ["--backend", "docker"]
    for name, svc in services.items():
        sockets = [s for s, _ in _mounts(svc).values() if s.endswith("docker.sock")]
        assert bool(sockets) == (name == "agent-docker"), name


def test_each_role_mounts_only_its_own_settings(resolved: dict[str, Any]) -> None:
    """The cluster's secrets (admin.json, every password) reach init and the CLI helper
    only; a service sees the services' settings, an agent the agents'."""
    for name, svc in _services(resolved).items():
        sources = {source: ro for source, ro in _mounts(svc).values()}
        assert ("cluster" in sources) == (name in ("init", "cli")), name
        if name in all_services():
            assert sources.get("service-etc") is True and "agent-etc" not in sources, name
        if name.startswith("agent"):
            assert sources.get("agent-etc") is True and "service-etc" not in sources, name
            assert sources.get("keys") is True, name


def test_no_secret_is_written_in_the_file() -> None:
    text = COMPOSE.read_text().lower()
    for word in ("password:", "secret_access_key", "secretkey", "token:"):
        assert word not in text


def _cluster_folder(folder: Path) -> None:
    """What ``cairn cluster init`` leaves that bootstrap.py reads."""
    folder.mkdir()
    creds = Credentials.load_or_create(folder / "credentials.json")
    (folder / "roles.json").write_text(json.dumps(creds.roles_file()))


def _bootstrap(tmp_path: Path) -> Path:
    cluster, etc = tmp_path / "cluster", tmp_path / "etc"
    if not cluster.exists():
        _cluster_folder(cluster)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "compose" / "bootstrap.py"),
            "settings",
            "--cluster",
            str(cluster),
            "--etc",
            str(etc),
            "--nats-url",
            "nats://nats-1:4222,nats://nats-2:4223",
            "--s3-endpoint",
            "http://seaweedfs:8333",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return etc


def test_bootstrap_writes_settings_cairn_reads(tmp_path: Path) -> None:
    etc = _bootstrap(tmp_path)
    creds = json.loads((tmp_path / "cluster" / "credentials.json").read_text())
    service = load_settings(env={"CAIRN_CONFIG": str(etc / "service" / "config.json")})
    assert (service.nats_user, service.nats_password) == (
        "cairn-service",
        creds["service_password"],
    )
    assert service.nats_url == "nats://nats-1:4222,nats://nats-2:4223"
    assert service.artifact_s3 is not None and service.artifact_s3.bucket == "cairn-artifacts"
    assert json.loads(Path(service.roles_file or "").read_text()) == json.loads(
        (tmp_path / "cluster" / "roles.json").read_text()
    )
    agent = load_settings(env={"CAIRN_CONFIG": str(etc / "agent" / "config.json")})
    assert (agent.nats_user, agent.nats_password) == ("cairn-agent", creds["agent_password"])
    assert agent.artifact_s3 is None and agent.roles_file is None
    gateway = load_settings(env={"CAIRN_CONFIG": str(etc / "gateway" / "config.json")})
    assert gateway.nats_user is None and gateway.scorer_password == creds["scorer_password"]
    assert len(bytes.fromhex(Path(gateway.gateway_key_file or "").read_text())) == 32
    s3 = json.loads((etc / "s3" / "s3.json").read_text())["identities"][0]["credentials"][0]
    assert s3["accessKey"] == service.artifact_s3.access_key_id
    assert s3["secretKey"] == service.artifact_s3.secret_access_key
    audit = load_settings(env={"CAIRN_AUDIT_KEY_FILE": str(etc / "audit" / "audit.ed25519.key")})
    assert load_or_create_signing_key(audit)  # what the audit service opens at start
    private = [*etc.rglob("*.json"), *etc.rglob("*.key")]
    assert {p.name for p in private} >= {"gateway.key", "audit.ed25519.key", "s3.json"}
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_bootstrap_again_keeps_every_password_and_key(tmp_path: Path) -> None:
    etc = _bootstrap(tmp_path)
    before = {p: p.read_bytes() for p in etc.rglob("*") if p.is_file()}
    _bootstrap(tmp_path)
    assert {p: p.read_bytes() for p in before} == before
