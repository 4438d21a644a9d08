"""One frozen settings struct per process, from an optional JSON file and ``CAIRN_*`` variables.

Precedence: defaults < file < environment. The file is ``$CAIRN_CONFIG`` when set, else
``$CAIRN_HOME/config.json`` when it exists (``cairn up`` writes it). Unknown fields in the file
are an error, so a typo never silently falls back to a default. ``config_file`` records which
file was read, so an error can name where to fix a setting; it is not itself a setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from cairn.errors import InvalidInput
from cairn.storage import S3Config

__all__ = ["Settings", "check_tls_pair", "default_home", "load_settings"]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    home: str = "~/.cairn"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: str | None = None
    #: inside a job: the agent's socket for this attempt, the job's only way to the services
    #: (set by the agent; a job holds no NATS credentials)
    agent_socket: str | None = None
    #: the CA file (PEM) the server's certificate must be signed by; None: the system's store
    #: when the server asks for TLS (or the URL is ``tls://``)
    tls_ca: str | None = None
    #: this client's certificate and key (PEM), for a server that requires mutual TLS: both
    #: or neither
    tls_cert: str | None = None
    tls_key: str | None = None
    workspace: str = "default"
    actor: str | None = None
    state_dir: str | None = None
    request_timeout: float = 10.0
    #: how many replicas each stream and KV bucket keeps (``CAIRN_STREAM_REPLICAS``):
    #: ``cairn cluster init`` writes the cluster's (3; 1 for one node) into the settings it
    #: makes. None: 3 when the server has cluster peers when the process connects, else 1
    #: (a guess: cairn.bus.cluster_replicas says what it cannot see)
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None
    #: how long a client (CLI, SDK) tries to reach the server before it gives up with the
    #: cause; long-running processes (services, agents) keep trying with backoff instead
    connect_timeout_s: float = 5.0
    metrics_nonfinite: Literal["allow", "reject"] = "allow"
    artifacts_dir: str | None = None
    artifact_s3: S3Config | None = None
    max_artifact_bytes: int = 100 * 1024**3
    roles_file: str | None = None
    #: the folders local datastores may be rooted under, separated by ``os.pathsep`` (as
    #: ``PATH``); default (None): ``<home>/datastores`` alone, where the built-in datastores
    #: live. A datastore's folder is staged into jobs, so a root such as ``/`` or a home
    #: folder would hand the host's files (keys, credentials) to any job
    datastore_roots: str | None = None
    #: whether http(s) URL inputs (jobs, datasets, batch invocations) may name hosts that
    #: are or resolve to loopback, private, link-local or multicast addresses; off by
    #: default, as such a URL is read with the reading machine's network position (the
    #: cloud metadata service, the cluster's own services)
    url_allow_private_hosts: bool = False
    #: where workspace keys live (default ``<home>/keys``); a process that moves datastore
    #: bytes (the SDK, an agent) needs the key to open the datastore's credentials
    keys_dir: str | None = None
    #: the audit service's Ed25519 signing key (default ``<keys_dir>/audit.ed25519.key``,
    #: made on first start; its public half beside it, ``.pub``)
    audit_key_file: str | None = None
    #: the audit service signs a checkpoint of a workspace's chain after this many of its
    #: events, or this many seconds after the first one not yet signed
    audit_every_events: int = 1000
    audit_every_s: float = 60.0
    #: how long an agent may stay silent before its job is taken back and re-queued
    job_lease_s: float = 30.0
    #: seconds between the heartbeats of an open interactive run (``start_logging``); a run
    #: whose process misses three in a row is failed as lost by the tracking service
    run_heartbeat_s: float = 10.0
    #: deliveries of one job ticket before JetStream gives up on it (the run then fails)
    job_max_deliver: int = 5
    #: unclaimed tickets per compute target; queued runs beyond it wait in priority order
    job_ticket_window: int = 16
    #: seconds between SIGTERM and SIGKILL when a job is canceled
    job_cancel_grace_s: float = 10.0
    #: how long a serving replica must have been ready before its loss starts its re-queue
    #: back-off over (as Kubernetes resets a crash loop's after ten minutes)
    replica_stable_s: float = 600.0
    #: seconds between two deliveries of a serving replica's collected requests
    #: (``data_collector``) to its datastore, and once more when it stops; each delivery is
    #: one upload record on the datastore's history
    collect_deliver_s: float = 60.0
    #: fork ``python <script>`` jobs from a warm interpreter (process backend); off: every
    #: job's interpreter starts cold (``CAIRN_JOB_WARM_START=0``)
    job_warm_start: bool = True
    #: seconds a job's warm start waits for its interpreter to answer; past them (a machine
    #: under load) the job starts cold, and so do the next ones until it answers again
    job_warm_answer_s: float = 30.0
    #: more of an agent's environment variables its jobs may see, beyond the built-in
    #: allow-list (locale, paths, proxies, CUDA...): comma-separated names or ``PREFIX*``
    job_env_allow: str = ""
    #: keep process-backend jobs out of the agent's home, state, artifacts and keys with
    #: Landlock (Linux 5.13+); off (``CAIRN_JOB_CONFINE_FILES=0``): a job can read what the
    #: agent's OS user can
    job_confine_files: bool = True
    #: environments may pin a Python that ``uv`` downloads (python-build-standalone, from
    #: GitHub) as well as one installed on the machine; off: only installed interpreters,
    #: and a submit pinning another is refused (``CAIRN_PYTHON_DOWNLOADS=1`` to allow)
    python_downloads: bool = False
    #: where the gateway (studio, HTTP API, /metrics) listens; ``cairn up`` serves it there
    #: (port 0: not at all)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8742
    #: the key that seals the studio's session cookies (32 random bytes, hex); default
    #: ``<home>/gateway.key``, made on first use. Gateways that share one key share sessions
    gateway_key_file: str | None = None
    #: the studio is reached over HTTPS (e.g. behind a TLS proxy): its session cookie is
    #: ``Secure``, sent over HTTPS only. A gateway bound to a non-loopback address without it
    #: logs a warning at start: passwords and session cookies would travel in the clear
    gateway_https: bool = False
    #: webhooks: seconds one delivery may take (connect, send, answer) before it counts as
    #: failed; attempts of one delivery before it goes to the dead-letter list; the pause
    #: after the first failed attempt (doubling after each, at most ``webhook_backoff_max_s``)
    webhook_timeout_s: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 1.0
    webhook_backoff_max_s: float = 300.0
    #: the gateway's address as clients reach it, for endpoints' scoring addresses (default
    #: ``http://<gateway_host>:<gateway_port>``; behind a proxy, the proxy's)
    gateway_url: str | None = None
    #: the largest body ``POST /endpoints/<ws>/<endpoint>/score`` takes (413 beyond it; a
    #: NATS message carries at most 1 MiB by default)
    gateway_score_max_bytes: int = 1_000_000
    #: how long a scoring request is retried while no replica of the chosen deployment
    #: answers (none subscribed yet, or all being replaced); then 503
    gateway_score_retry_s: float = 10.0
    #: copies of requests to a mirrored deployment (``mirror_traffic``) on their way at once;
    #: a copy beyond them is dropped and counted (``cairn_gateway_mirror_dropped_total``)
    gateway_mirror_max_inflight: int = 64
    #: how long the gateway keeps an endpoint's route asked with a key (``endpoint.route``),
    #: at most: an event of the endpoint (keys, traffic, deletion) drops it at once; 0: ask
    #: for every request
    gateway_route_cache_s: float = 1.0
    #: seed of the gateway's weighted choice of a deployment (None: from the OS): for tests
    #: that count where requests went
    gateway_route_seed: int | None = None
    #: the password of the gateway's scoring user (``cairn-scorer``); default: the home's
    #: ``credentials.json``, as ``cairn up`` writes it
    scorer_password: str | None = None
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    #: the settings file these were read from (set by ``load_settings``; None: none was read)
    config_file: str | None = None

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser() if self.state_dir else self.home_path / "state"

    @property
    def artifacts_path(self) -> Path:
        return (
            Path(self.artifacts_dir).expanduser()
            if self.artifacts_dir
            else self.home_path / "artifacts"
        )

    @property
    def who(self) -> str:
        """The declared actor: explicit setting, else the NATS user, else the OS user."""
        return self.actor or self.nats_user or os.environ.get("USER") or "anonymous"


def default_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CAIRN_HOME", "~/.cairn")).expanduser()


def load_settings(
    env: Mapping[str, str] | None = None, file: Path | None = None, **overrides: Any
) -> Settings:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = file or (Path(env["CAIRN_CONFIG"]) if env.get("CAIRN_CONFIG") else None)
    if path is None and (default_home(env) / "config.json").exists():
        path = default_home(env) / "config.json"
    if path is not None:
        try:
            values.update(msgspec.json.decode(path.read_bytes()))
        except FileNotFoundError as exc:
            raise InvalidInput(
                f"the settings file {path} does not exist (yet): `cairn up` writes"
                f" {default_home(env) / 'config.json'} when the stack is ready; or point"
                " CAIRN_CONFIG at an existing file"
            ) from exc
        except (OSError, msgspec.DecodeError) as exc:
            raise InvalidInput(f"cannot read settings file {path}: {exc}") from exc
        if "config_file" in values:
            raise InvalidInput(f"settings file {path}: config_file is not a setting")
        values["config_file"] = str(path)
    fields = {f.name for f in msgspec.structs.fields(Settings)} - {"config_file"}
    for key, value in env.items():
        if key.startswith("CAIRN_") and key[6:].lower() in fields:
            values[key[6:].lower()] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        loaded = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"bad settings: {exc}") from exc
    check_tls_pair(loaded)
    return loaded


def check_tls_pair(settings: Settings) -> None:
    """A client certificate without its key (or a key without its certificate) is an error
    that names the missing setting and where to give it."""
    if (settings.tls_cert is None) == (settings.tls_key is None):
        return
    given, missing = (
        ("tls_cert", "tls_key") if settings.tls_key is None else ("tls_key", "tls_cert")
    )
    where = (
        f"in {settings.config_file} or as CAIRN_{missing.upper()}"
        if settings.config_file
        else f"as CAIRN_{missing.upper()}"
    )
    raise InvalidInput(
        f"{given} is set ({getattr(settings, given)}) but {missing} is not: a client"
        f" certificate needs its key; give {missing} {where}, or neither"
    )
