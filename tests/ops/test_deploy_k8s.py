"""ops/k8s/: every manifest is valid against the Kubernetes API's JSON schemas (strict: an
unknown or misspelt field is an error), checked without a cluster by kubernetes-validate,
which ships the schemas; and the manifests deploy what ops/k8s/README.md says."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils

from cairn.embedded._auth import Credentials, accounts_config
from cairn.embedded._server import find_nats_server
from cairn.embedded._up import all_services

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "ops" / "k8s"
#: the oldest Kubernetes release still maintained upstream when this was written, and the
#: newest the validator knows: the manifests use nothing either lacks
VERSIONS = ["1.32.0", utils.latest_version()]


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "nats-values.yaml":
            continue  # Helm values, not a manifest
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


DOCUMENTS = _documents()
BY_NAME = {doc["metadata"]["name"]: doc for _, doc in DOCUMENTS if doc["kind"] != "Service"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("where", "doc"), DOCUMENTS, ids=[w for w, _ in DOCUMENTS])
def test_manifest_is_valid(where: str, doc: dict[str, Any], version: str) -> None:
    try:
        utils.validate(doc, version, strict=True)
    except utils.ValidationError as exc:
        pytest.fail(f"{where} is not a valid {doc['kind']} of Kubernetes {version}: {exc}")


def test_the_validator_refuses_a_misspelt_field() -> None:
    """So that a pass above means something."""
    doc = yaml.safe_load(yaml.safe_dump(BY_NAME["cairn-tracking"]))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(utils.ValidationError):
        utils.validate(doc, VERSIONS[-1], strict=True)


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = doc["spec"]["template"]["spec"]
    return pod


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(doc)["containers"]
    assert len(containers) == 1
    return containers[0]


def _port(container: dict[str, Any], name: str) -> int:
    ports: list[dict[str, Any]] = container["ports"]
    return next(int(p["containerPort"]) for p in ports if p["name"] == name)


@pytest.mark.parametrize("service", [*all_services(), "gateway"])
def test_every_service_is_a_deployment_of_two_with_probes(service: str) -> None:
    doc = BY_NAME.get(f"cairn-{service}")
    assert doc is not None, f"ops/k8s has no Deployment of {service}"
    assert doc["kind"] == "Deployment" and doc["spec"]["replicas"] == 2
    container = _container(doc)
    assert container["command"][:3] == ["cairn", "serve", service]
    if service == "gateway":
        port_name, port = "http", 8742
    else:
        port_name, port = "ops", 9464
        assert container["command"][3:] == ["--ops-port", str(port), "--ops-host", "0.0.0.0"]
    assert _port(container, port_name) == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port_name}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port_name}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_agents_are_a_deployment_and_state_is_where_the_readme_says() -> None:
    agent = BY_NAME["cairn-agent"]
    assert agent["kind"] == "Deployment" and agent["spec"]["replicas"] == 2
    assert _container(agent)["command"][:2] == ["cairn", "agent"]
    stateful = {name for name, doc in BY_NAME.items() if doc["kind"] == "StatefulSet"}
    assert stateful == {"seaweedfs"}
    claims = {name for name, doc in BY_NAME.items() if doc["kind"] == "PersistentVolumeClaim"}
    assert claims == {"cairn-keys"}
    assert BY_NAME["cairn-keys"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_pods_run_unprivileged() -> None:
    for name, doc in BY_NAME.items():
        if "template" not in doc.get("spec", {}):
            continue
        pod = _pod(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        security = _container(doc)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name


def _secrets_referenced() -> set[str]:
    names = set()
    for _, doc in DOCUMENTS:
        if "template" in doc.get("spec", {}):
            for volume in _pod(doc).get("volumes", []):
                if "secret" in volume:
                    names.add(volume["secret"]["secretName"])
    return names


def test_secrets_are_referenced_never_written_and_the_readme_makes_each() -> None:
    assert not [w for w, doc in DOCUMENTS if doc["kind"] == "Secret"]
    readme = (K8S / "README.md").read_text()
    made = set(re.findall(r"kubectl create secret generic (\S+)", readme))
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    patched = values["podTemplate"]["patch"][0]["value"]["secret"]["secretName"]
    assert _secrets_referenced() | {patched} == made


def test_nats_values_make_a_synced_three_node_jetstream_cluster() -> None:
    """The values of the official chart (nats-io/k8s, 1.x) that Cairn depends on."""
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["cluster"] == {
        "enabled": True,
        "replicas": 3,
        "routeURLs": {"user": "cairn-route"},
    }
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True and jetstream["fileStore"]["pvc"]["enabled"]
    assert jetstream["merge"] == {"sync_interval": "always"}
    assert config["merge"]["00$include"] == "../nats-accounts/accounts.conf"
    mount = values["container"]["patch"][0]["value"]
    assert mount["mountPath"] == "/etc/nats-accounts"

    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        if isinstance(node, list):
            return {k for v in node for k in keys(v)}
        return set()

    assert not {k for k in keys(values) if "pass" in k.lower()}, "a password in the values"


def test_nats_server_reads_the_config_those_values_make(tmp_path: Path) -> None:
    """The chart writes nats.conf as JSON in /etc/nats-config with the merged keys, and an
    include of the Secret's accounts.conf beside it: the real nats-server takes that."""
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    config = values["config"]
    (tmp_path / "nats-config").mkdir()
    (tmp_path / "nats-accounts").mkdir()
    creds = Credentials.load_or_create(tmp_path / "credentials.json")
    accounts = "\n".join(accounts_config(creds, "admin-password")) + "\n"
    (tmp_path / "nats-accounts" / "accounts.conf").write_text(accounts)
    jetstream = {"store_dir": str(tmp_path / "data"), **config["jetstream"]["merge"]}
    merged = {k: v for k, v in config["merge"].items() if not k.endswith("$include")}
    body = "\n".join(
        [
            '"port": 4222',
            f'"jetstream": {json.dumps(jetstream)}',
            *(f'"{k}": {str(v).strip("<> ")}' for k, v in merged.items()),
        ]
    )
    include = config["merge"]["00$include"]
    conf = tmp_path / "nats-config" / "nats.conf"
    conf.write_text(f"include {include};\n{body}\n")
    done = subprocess.run(
        [find_nats_server(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
