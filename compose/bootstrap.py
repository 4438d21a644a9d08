"""What compose.yaml's one-shot services run with the image's Python, beside the Cairn CLI
(ops/k8s/README.md runs it too, to make the Kubernetes Secrets).

``settings``: after ``cairn cluster init`` wrote the cluster's folder (node configs,
``credentials.json``, ``roles.json``), give each kind of process a settings file
(``CAIRN_CONFIG``) with its own user and nothing more, each in a folder of its own (a volume,
or a Secret), so a container mounts only what its role needs::

    <etc>/service/config.json    cairn-service: the NATS URLs, the S3 store of run files
    <etc>/service/roles.json     each role's people (what the services' role checks read)
    <etc>/agent/config.json      cairn-agent
    <etc>/gateway/config.json    the scoring user's password, the session key's file
    <etc>/gateway/gateway.key    the studio's session key (the gateway's replicas share it)
    <etc>/audit/audit.ed25519.key, .pub   the audit service's signing key (both replicas)
    <etc>/s3/s3.json             SeaweedFS's one identity

The session and signing keys are made here, once, because replicas that each made their own
at first start would seal, or sign, with different keys. Running it again keeps every
password and key and rewrites the files from them. Paths inside the files are where the
containers see ``<etc>`` (``--mount-etc``; by default ``<etc>`` itself).

``bucket``: wait until the S3 store answers, then create the artifacts' bucket unless it
exists (the artifacts service expects it).

    python bootstrap.py settings --cluster DIR --etc DIR --nats-url URLS
        --s3-endpoint URL [--bucket NAME] [--mount-etc DIR]
    python bootstrap.py bucket --config <etc>/service/config.json [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any


def _write_private(path: Path, body: dict[str, Any]) -> None:
    """Written whole (0600) under a temporary name, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)


def _s3_identity(path: Path) -> tuple[str, str]:
    """The S3 store's access key and secret: read from its ``s3.json``, made once."""
    if path.exists():
        identity = json.loads(path.read_text())["identities"][0]["credentials"][0]
        return str(identity["accessKey"]), str(identity["secretKey"])
    access, secret = f"cairn-{secrets.token_hex(4)}", secrets.token_urlsafe(32)
    identity = {
        "name": "cairn",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List"],
    }
    _write_private(path, {"identities": [identity]})
    return access, secret


def _session_key(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


def settings(args: argparse.Namespace) -> None:
    from cairn.audit import load_or_create_signing_key
    from cairn.settings import Settings

    cluster, etc = Path(args.cluster), Path(args.etc)
    seen = Path(args.mount_etc or args.etc)
    creds = json.loads((cluster / "credentials.json").read_text())
    roles = json.loads((cluster / "roles.json").read_text())
    access, secret = _s3_identity(etc / "s3" / "s3.json")
    _write_private(etc / "service" / "roles.json", roles)
    _write_private(
        etc / "service" / "config.json",
        {
            "nats_url": args.nats_url,
            "nats_user": "cairn-service",
            "nats_password": creds["service_password"],
            "roles_file": str(seen / "service" / "roles.json"),
            "artifact_s3": {
                "endpoint_url": args.s3_endpoint,
                "bucket": args.bucket,
                "access_key_id": access,
                "secret_access_key": secret,
            },
        },
    )
    _write_private(
        etc / "agent" / "config.json",
        {
            "nats_url": args.nats_url,
            "nats_user": "cairn-agent",
            "nats_password": creds["agent_password"],
        },
    )
    _session_key(etc / "gateway" / "gateway.key")
    _write_private(
        etc / "gateway" / "config.json",
        {
            "nats_url": args.nats_url,
            "scorer_password": creds["scorer_password"],
            "gateway_key_file": str(seen / "gateway" / "gateway.key"),
        },
    )
    audit_key = etc / "audit" / "audit.ed25519.key"
    load_or_create_signing_key(Settings(audit_key_file=str(audit_key)))
    print(f"wrote the settings of services, agents, the gateway and the audit service to {etc}")


def bucket(args: argparse.Namespace) -> None:
    import botocore.exceptions
    import botocore.session

    s3 = json.loads(Path(args.config).read_text())["artifact_s3"]
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=s3["access_key_id"],
        aws_secret_access_key=s3["secret_access_key"],
    )
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            client.head_bucket(Bucket=s3["bucket"])
            print(f"bucket {s3['bucket']} is there")
            return
        except botocore.exceptions.ClientError as exc:  # it answers: the bucket is missing
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            client.create_bucket(Bucket=s3["bucket"])
            print(f"created bucket {s3['bucket']}")
            return
        except botocore.exceptions.EndpointConnectionError:
            if time.monotonic() > deadline:
                sys.exit(f"no S3 store answers at {s3['endpoint_url']} after {args.timeout} s")
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("settings", help="each role's settings file, and the shared keys")
    made.add_argument("--cluster", required=True, help="the folder cairn cluster init wrote")
    made.add_argument("--etc", required=True, help="where the settings folders are")
    made.add_argument("--nats-url", required=True, help="every node's URL, comma-separated")
    made.add_argument("--s3-endpoint", required=True, help="the S3 store of run files")
    made.add_argument("--bucket", default="cairn-artifacts", help="its bucket")
    made.add_argument("--mount-etc", help="where the containers see --etc (default: --etc)")
    made.set_defaults(run=settings)
    made = sub.add_parser("bucket", help="create the artifacts' bucket once S3 answers")
    made.add_argument("--config", required=True, help="the services' config.json")
    made.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for S3")
    made.set_defaults(run=bucket)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
