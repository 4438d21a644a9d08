"""Who may connect to the embedded nats-server, and the accounts that attest who they are.

Two accounts (docs/security.md draws them):

- ``CAIRN`` holds the streams (JetStream) and the processes trusted with them: the services
  (``cairn-service``) and the agents (``cairn-agent``). It exports the command and query
  subjects, the artifact service's upload sessions and the services' broadcasts (pings,
  read-model state) as services, and the few JetStream reads people need (stream info, a
  job's logs, agent heartbeats).
- ``USERS`` holds people, without JetStream. It imports those subjects with ``share: true``,
  so the server adds a ``Nats-Request-Info`` header naming the account and user to each
  request that crosses over; a header a client sets itself is overwritten. Services record
  that user as the actor (:func:`cairn.rpc.actor_of`). JetStream reads are imported under
  ``$JS.CAIRN.API`` (an account without JetStream answers ``$JS.API`` itself), and each
  person's own inbox ``_INBOX_<user>`` receives what a consumer delivers there.

``credentials.json`` (0600) keeps the passwords and each person's roles; ``roles.json`` (what
the services' role checks read) is written from it with the server's config.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus._connect import PEOPLE_JS_PREFIX
from cairn.errors import InvalidInput
from cairn.proto.streams import AGENTS_BUCKET, LOGS, STREAMS
from cairn.rpc import PEOPLE_ACCOUNT, SERVICE_ACCOUNT
from cairn.settings import Settings

__all__ = [
    "AGENT_USER",
    "COMPUTE_OPERATOR",
    "DATA_SCIENTIST",
    "LOCAL_ROLES",
    "ROLES",
    "SERVICE_USER",
    "Credentials",
    "Person",
    "accounts_config",
    "check_person_name",
    "embedded_agent_settings",
    "write_private",
]

SERVICE_USER = "cairn-service"
AGENT_USER = "cairn-agent"
DATA_SCIENTIST = "data_scientist"
COMPUTE_OPERATOR = "compute_operator"
AUDITOR = "auditor"
ROLES = (DATA_SCIENTIST, COMPUTE_OPERATOR, AUDITOR)
#: the person ``cairn up`` makes from the local user
LOCAL_ROLES = (DATA_SCIENTIST, COMPUTE_OPERATOR)
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: request/reply subjects people send to the services (server-attested with ``share``)
_SHARED_SERVICES = ("cairn.cmd.>", "cairn.q.>", "cairn.artifacts.>")
#: what every service instance answers (pings, read-model state): many replies to one request
_BROADCASTS = "cairn.svc.>"
_KV_AGENTS = f"KV_{AGENTS_BUCKET.bucket}"


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def check_person_name(name: str) -> str:
    """A person's user name: lower-case letters, digits, ``_`` and ``-`` (it becomes a subject
    token), and never one of the names the stack itself uses."""
    if not _NAME.fullmatch(name) or name.startswith("cairn"):
        rule = "[a-z][a-z0-9_-]{0,31} and not start with 'cairn'"
        raise InvalidInput(f"user name {name!r:.40} must match {rule}")
    return name


def _local_name() -> str:
    user = os.environ.get("USER", "").lower()
    return user if _NAME.fullmatch(user) and not user.startswith("cairn") else "user"


@dataclass(frozen=True)
class Person:
    password: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Credentials:
    """Every password of one embedded server. ``client_user`` is the local person."""

    service_password: str
    agent_password: str
    client_user: str
    people: dict[str, Person] = field(default_factory=dict)

    @property
    def client_password(self) -> str:
        return self.people[self.client_user].password

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """The home's credentials, made on first start (and completed, rewritten, when an
        older file lacks a field)."""
        raw: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        user = raw.get("client_user") or _local_name()
        people = {
            name: Person(password=p["password"], roles=tuple(p["roles"]))
            for name, p in raw.get("people", {}).items()
        }
        if user not in people:
            password = raw.get("client_password") or secrets.token_urlsafe(24)
            people[user] = Person(password=password, roles=LOCAL_ROLES)
        creds = cls(
            service_password=raw.get("service_password") or secrets.token_urlsafe(24),
            agent_password=raw.get("agent_password") or secrets.token_urlsafe(24),
            client_user=user,
            people=people,
        )
        if creds.as_json() != raw:
            creds.save(path)
        return creds

    def as_json(self) -> dict[str, Any]:
        return {
            "service_password": self.service_password,
            "agent_password": self.agent_password,
            "client_user": self.client_user,
            "people": {
                name: {"password": p.password, "roles": list(p.roles)}
                for name, p in sorted(self.people.items())
            },
        }

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.as_json(), indent=2) + "\n")

    def with_person(self, name: str, roles: Iterable[str]) -> Credentials:
        """These credentials plus person ``name`` (a new password) with ``roles``."""
        check_person_name(name)
        wanted = tuple(dict.fromkeys(roles))
        unknown = [r for r in wanted if r not in ROLES]
        if unknown or not wanted:
            raise InvalidInput(f"roles must be some of {', '.join(ROLES)}; got {list(wanted)}")
        person = Person(password=secrets.token_urlsafe(24), roles=wanted)
        return Credentials(
            service_password=self.service_password,
            agent_password=self.agent_password,
            client_user=self.client_user,
            people={**self.people, name: person},
        )

    def roles_file(self) -> dict[str, list[str]]:
        """What ``roles.json`` says: each role's people (``compute_operators: [...]``)."""
        return {
            f"{role}s": sorted(n for n, p in self.people.items() if role in p.roles)
            for role in ROLES
        }


def _q(value: str) -> str:
    return json.dumps(value)


def _people_js_api() -> list[str]:
    """The JetStream API subjects people may use, read-only: stream info (``cairn status``),
    a job's logs (``cairn job stream``: an ordered consumer on LOGS), agent heartbeats
    (``cairn agent list``: the KV bucket's keys and values)."""
    subjects = ["STREAM.NAMES"]
    subjects += [f"STREAM.INFO.{s.name}" for s in STREAMS] + [f"STREAM.INFO.{_KV_AGENTS}"]
    for stream in (LOGS.name, _KV_AGENTS):
        subjects += [
            f"CONSUMER.CREATE.{stream}",
            f"CONSUMER.CREATE.{stream}.>",
            f"CONSUMER.INFO.{stream}.*",
            f"CONSUMER.DELETE.{stream}.>",
        ]
    subjects += [f"STREAM.MSG.GET.{LOGS.name}", f"DIRECT.GET.{_KV_AGENTS}.>"]
    return subjects


def _permissions(publish: Iterable[str], subscribe: Iterable[str]) -> str:
    return (
        f"permissions: {{publish: {{allow: {json.dumps(list(publish))}}},"
        f" subscribe: {{allow: {json.dumps(list(subscribe))}}}}}"
    )


def _person(name: str, person: Person) -> str:
    publish = [
        *_SHARED_SERVICES,
        _BROADCASTS,
        f"{PEOPLE_JS_PREFIX}.>",
        "$JS.FC.>",
        "$JS.API.INFO",  # answered "not enabled" by USERS itself: how a client finds the prefix
    ]
    subscribe = [f"_INBOX_{name}.>"]
    permissions = _permissions(publish, subscribe)
    return f"{{user: {_q(name)}, password: {_q(person.password)}, {permissions}}}"


def accounts_config(creds: Credentials) -> list[str]:
    """The ``accounts`` block of the server's config."""
    js_api = _people_js_api()
    exports = [f"{{service: {_q(s)}}}" for s in _SHARED_SERVICES]
    exports.append(f"{{service: {_q(_BROADCASTS)}, response_type: stream}}")
    exports += [f"{{service: {_q('$JS.API.' + s)}}}" for s in js_api]
    exports.append(f"{{service: {_q('$JS.FC.>')}}}")
    imports = [
        f"{{service: {{account: {SERVICE_ACCOUNT}, subject: {_q(s)}}}, share: true}}"
        for s in _SHARED_SERVICES
    ]
    imports.append(f"{{service: {{account: {SERVICE_ACCOUNT}, subject: {_q(_BROADCASTS)}}}}}")
    imports += [
        f"{{service: {{account: {SERVICE_ACCOUNT}, subject: {_q('$JS.API.' + s)}}},"
        f" to: {_q(PEOPLE_JS_PREFIX + '.' + s)}}}"
        for s in js_api
    ]
    imports.append(f"{{service: {{account: {SERVICE_ACCOUNT}, subject: {_q('$JS.FC.>')}}}}}")
    for name in sorted(creds.people):
        exports.append(f"{{stream: {_q(f'_INBOX_{name}.>')}}}")
        imports.append(
            f"{{stream: {{account: {SERVICE_ACCOUNT}, subject: {_q(f'_INBOX_{name}.>')}}}}}"
        )
    services = [
        f"{{user: {_q(SERVICE_USER)}, password: {_q(creds.service_password)}}}",
        f"{{user: {_q(AGENT_USER)}, password: {_q(creds.agent_password)}}}",
    ]
    people = [_person(name, p) for name, p in sorted(creds.people.items())]
    return [
        "accounts {",
        f"  {SERVICE_ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
        *(f"      {u}" for u in services),
        "    ]",
        "    exports: [",
        *(f"      {e}" for e in exports),
        "    ]",
        "  }",
        f"  {PEOPLE_ACCOUNT} {{",
        "    users: [",
        *(f"      {u}" for u in people),
        "    ]",
        "    imports: [",
        *(f"      {i}" for i in imports),
        "    ]",
        "  }",
        "}",
    ]


def embedded_agent_settings(settings: Settings) -> Settings:
    """The settings an agent connects with: a person's settings over an embedded home (the
    local agent of ``cairn up``, ``cairn agent`` on the same machine) become the home's agent
    user, which lives in the services' account; any other settings stay as they are (an
    agent on a worker machine is given agent credentials)."""
    path = settings.home_path / "credentials.json"
    if settings.nats_creds or not path.is_file():
        return settings
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return settings
    if settings.nats_user not in raw.get("people", {}) or not raw.get("agent_password"):
        return settings
    return msgspec.structs.replace(
        settings, nats_user=AGENT_USER, nats_password=str(raw["agent_password"])
    )
