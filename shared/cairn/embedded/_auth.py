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

Each user may publish and subscribe to what its role needs and nothing else
(:func:`accounts_config`; the role matrix in docs/security.md): people to their roles' command
families and the queries, in any workspace (the services then check that they are members of
the workspace, with a role there that allows the request: :mod:`cairn.members`), and their own
inbox; agents to their job tickets, their reports and what a job's script sends; services to
everything but stream deletion, purges, reconfiguration, snapshots and restores, and the
workspace-membership commands (``cairn.cmd.*.member.>``). Those belong to the admin user
``cairn-admin`` alone, whose password is kept apart in ``admin.json`` (0600) and which only the
administration commands use (``cairn workspace add-member``..., ``cairn up``'s migration of
member-less workspaces).

``credentials.json`` (0600) keeps the other passwords, each person's roles and their API
tokens (:mod:`cairn.tokens`: a token is a user ``<person>~<id>`` of ``USERS`` with its person's
permissions, worked out again at every rewrite, so it follows its person's roles);
``roles.json`` (what the services' role checks read) is written from it. ``cairn user`` and
``cairn token`` edit it and reload the running server (:mod:`cairn.embedded._users`).
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
from cairn.errors import InvalidInput, NotFound
from cairn.proto.serving import MAX_REQUEST_TIMEOUT_S
from cairn.proto.streams import AGENTS_BUCKET, JOBS, LOGS, STREAMS
from cairn.rpc import ADMIN_ACTOR, PEOPLE_ACCOUNT, PING_SUBJECT, SCORER_USER, SERVICE_ACCOUNT
from cairn.serving import MAX_ANSWER_CHUNKS
from cairn.settings import Settings
from cairn.tokens import PERSON_NAME, TOKEN_MARK

__all__ = [
    "ADMIN_USER",
    "AGENT_USER",
    "AUDITOR",
    "COMPUTE_OPERATOR",
    "DATA_SCIENTIST",
    "LOCAL_ROLES",
    "ROLES",
    "SCORER_USER",
    "SERVICE_USER",
    "SYSTEM_ACCOUNT",
    "SYSTEM_USER",
    "Credentials",
    "Person",
    "Token",
    "accounts_config",
    "admin_password",
    "check_person_name",
    "embedded_agent_settings",
    "embedded_service_settings",
    "person_publish",
    "system_password",
    "write_private",
]

SERVICE_USER = "cairn-service"
AGENT_USER = "cairn-agent"

ADMIN_USER = ADMIN_ACTOR
#: nats-server's own system account and its one user in a cluster, whose password
#: ``admin.json`` keeps beside the admin's: for operators' server requests (``nats server
#: report jetstream``, ``nats server raft peer-remove``, step-downs). It sees no Cairn subject
#: and holds no stream; no Cairn process connects as it. The default account (``$SYS``) is
#: given the user rather than another account made the system one: the servers keep the
#: JetStream meta group under the system account's folder of the store, so renaming it would
#: leave an existing cluster's record of its streams behind
SYSTEM_ACCOUNT = "$SYS"
SYSTEM_USER = "cairn-system"
DATA_SCIENTIST = "data_scientist"
COMPUTE_OPERATOR = "compute_operator"
AUDITOR = "auditor"
ROLES = (DATA_SCIENTIST, COMPUTE_OPERATOR, AUDITOR)
#: the person ``cairn up`` makes from the local user (a member of the default workspace and of
#: those it creates with these roles)
LOCAL_ROLES = (DATA_SCIENTIST, COMPUTE_OPERATOR)
#: command families (the verb's first token) each role may send in the workspaces it is a member
#: of (the server's permissions over any workspace, the services' membership check per
#: workspace: :mod:`cairn.members`); a data scientist submits jobs (``job.submit``) but does
#: not report them, which agents do
ROLE_COMMANDS: dict[str, tuple[str, ...]] = {
    DATA_SCIENTIST: (
        "workspace.>",
        "experiment.>",
        "run.>",
        "metrics.>",
        "artifact.>",
        "model.>",
        "environment.>",
        "datastore.>",
        "dataset.>",
        "job.submit",
        "schedule.>",
        "pipeline.>",
        "component.>",
        "sweep.>",
        "secret.>",
        "webhook.>",
        "endpoint.>",
        "batch.>",
    ),
    COMPUTE_OPERATOR: ("compute.>",),
    AUDITOR: (),
}
#: what an agent sends: its job reports, and what a job's script sends (it runs with the
#: agent's credentials where no person's are at hand)
AGENT_COMMANDS = (
    "experiment.>",
    "job.claim",
    "job.report",
    "job.finish",
    "run.>",
    "metrics.>",
    "artifact.>",
    "model.>",
    "dataset.>",
    "datastore.uploaded",
    # a job reads its workspace's secrets (``run.get_secret``); setting them is for people
    "secret.read",
    # a serving replica's start: ready, or its init() failed
    "replica.report",
    # a parallel run step's worker: its mini-batches (its own run and attempt, checked by
    # the agent's gate and by the pipelines service)
    "parallel.>",
)
#: what no one but the admin may do to a stream
_ADMIN_ONLY = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.SNAPSHOT.>",
    "$JS.API.STREAM.RESTORE.>",
    # a snapshot's chunks and their acknowledgements, a restore's chunks
    "$JS.SNAPSHOT.>",
    "$JS.API.STREAM.MSG.DELETE.EVENTS",
    "$JS.API.STREAM.MSG.DELETE.METRICS",
    "$JS.API.STREAM.MSG.DELETE.LOGS",
    # workspace membership: the admin's commands alone (the services record their actor as
    # the admin, which holds only while no other user may publish them)
    "cairn.cmd.*.member.>",
)
_NAME = PERSON_NAME
#: a token's id, the part of its user name after ``TOKEN_MARK``
_TOKEN_ID = re.compile(r"[a-z0-9]{8,32}")
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
    token), and never one of the names the stack itself uses. Never ``~`` either: that marks a
    token's user (:mod:`cairn.tokens`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.startswith("cairn"):
        rule = "[a-z][a-z0-9_-]{0,31} and not start with 'cairn'"
        raise InvalidInput(f"user name {name!r:.40} must match {rule}")
    return name


def _check_token_id(token_id: str) -> str:
    if not isinstance(token_id, str) or not _TOKEN_ID.fullmatch(token_id):
        raise InvalidInput(f"token id {token_id!r:.40} must match {_TOKEN_ID.pattern}")
    return token_id


def _local_name() -> str:
    user = os.environ.get("USER", "").lower()
    return user if _NAME.fullmatch(user) and not user.startswith("cairn") else "user"


@dataclass(frozen=True)
class Person:
    """A person's password and roles: what the server lets them send (their roles' command
    families, in any workspace). Which workspaces they may address, with which of those roles,
    is membership, recorded in the log (``cairn workspace add-member``)."""

    password: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Token:
    """An API token of ``person``: the server user ``<person>~<id>`` with ``password``, its
    person's permissions (whatever their roles are when the config is written) and its own
    inbox. ``name`` says what it is for; ``created`` is an ISO 8601 time."""

    person: str
    id: str
    password: str
    name: str
    created: str

    @property
    def user(self) -> str:
        return f"{self.person}{TOKEN_MARK}{self.id}"


@dataclass(frozen=True)
class Credentials:
    """Every password of one embedded server. ``client_user`` is the local person."""

    service_password: str
    agent_password: str
    client_user: str
    people: dict[str, Person] = field(default_factory=dict)
    #: API tokens by id
    tokens: dict[str, Token] = field(default_factory=dict)
    #: the gateway's scoring user's password (``SCORER_USER``)
    scorer_password: str = ""

    @property
    def client_password(self) -> str:
        return self.people[self.client_user].password

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """The home's credentials, made on first start (and completed, rewritten, when an
        older file lacks a field; the ``workspaces`` an older file gives a person are dropped:
        membership is in the log now)."""
        raw: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        user = check_person_name(raw.get("client_user") or _local_name())
        people = {
            check_person_name(name): Person(password=p["password"], roles=tuple(p["roles"]))
            for name, p in raw.get("people", {}).items()
        }
        tokens = {
            tid: Token(
                person=t["person"],
                id=_check_token_id(tid),
                password=t["password"],
                name=t.get("name", ""),
                created=t["created"],
            )
            for tid, t in raw.get("tokens", {}).items()
        }
        if orphans := sorted(t.user for t in tokens.values() if t.person not in people):
            raise InvalidInput(f"{path}: tokens {', '.join(orphans)} name no person of the file")
        if user not in people:
            password = raw.get("client_password") or secrets.token_urlsafe(24)
            people[user] = Person(password=password, roles=LOCAL_ROLES)
        creds = cls(
            service_password=raw.get("service_password") or secrets.token_urlsafe(24),
            agent_password=raw.get("agent_password") or secrets.token_urlsafe(24),
            client_user=user,
            people=people,
            tokens=tokens,
            scorer_password=raw.get("scorer_password") or secrets.token_urlsafe(24),
        )
        if creds.as_json() != raw:
            creds.save(path)
        return creds

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service_password": self.service_password,
            "agent_password": self.agent_password,
            "scorer_password": self.scorer_password,
            "client_user": self.client_user,
            "people": {
                name: {"password": p.password, "roles": list(p.roles)}
                for name, p in sorted(self.people.items())
            },
        }
        if self.tokens:  # a file of a home that never made one stays as it was
            out["tokens"] = {
                tid: {
                    "person": t.person,
                    "password": t.password,
                    "name": t.name,
                    "created": t.created,
                }
                for tid, t in sorted(self.tokens.items())
            }
        return out

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.as_json(), indent=2) + "\n")

    def with_person(self, name: str, roles: Iterable[str]) -> Credentials:
        """These credentials plus person ``name`` (a new password) with ``roles`` (a person
        of that name already is replaced: a new password, these roles)."""
        check_person_name(name)
        given = set(roles)
        unknown = sorted(given - set(ROLES))
        wanted = tuple(r for r in ROLES if r in given)
        if unknown or not wanted:
            raise InvalidInput(f"roles must be some of {', '.join(ROLES)}; got {sorted(given)}")
        person = Person(password=secrets.token_urlsafe(24), roles=wanted)
        return self._with_people({**self.people, name: person})

    def without_person(self, name: str) -> Credentials:
        """These credentials less person ``name`` (who must be one, and not the local
        person), and less their tokens."""
        if name not in self.people:
            raise NotFound(f"no person {name!r:.40} in these credentials")
        if name == self.client_user:
            raise InvalidInput(f"{name} is the local person of this home; it cannot be removed")
        tokens = {i: t for i, t in self.tokens.items() if t.person != name}
        return self._with_people({n: p for n, p in self.people.items() if n != name}, tokens)

    def with_token(self, person: str, name: str, created: str) -> tuple[Credentials, Token]:
        """These credentials plus a new token of ``person`` (who must be one), and the token."""
        if person not in self.people:
            raise NotFound(f"no person {person!r:.40} in these credentials ('cairn user list')")
        token_id = secrets.token_hex(6)
        while token_id in self.tokens:  # pragma: no cover - 48 random bits
            token_id = secrets.token_hex(6)
        token = Token(
            person=person,
            id=token_id,
            password=secrets.token_urlsafe(32),
            name=name,
            created=created,
        )
        return self._with_people(self.people, {**self.tokens, token_id: token}), token

    def without_token(self, token_id: str) -> tuple[Credentials, Token]:
        """These credentials less token ``token_id`` (which must be one), and the token."""
        token = self.tokens.get(token_id)
        if token is None:
            raise NotFound(f"no token {token_id!r:.40} in these credentials ('cairn token list')")
        tokens = {i: t for i, t in self.tokens.items() if i != token_id}
        return self._with_people(self.people, tokens), token

    def _with_people(
        self, people: dict[str, Person], tokens: dict[str, Token] | None = None
    ) -> Credentials:
        return Credentials(
            service_password=self.service_password,
            agent_password=self.agent_password,
            client_user=self.client_user,
            people=people,
            tokens=self.tokens if tokens is None else tokens,
            scorer_password=self.scorer_password,
        )

    def users(self) -> list[tuple[str, Person]]:
        """Every user of the people's account: each person, and each token as its person
        (with the token's password), sorted by user name."""
        found = list(self.people.items())
        for t in self.tokens.values():
            found.append((t.user, Person(password=t.password, roles=self.people[t.person].roles)))
        return sorted(found)

    def roles_file(self) -> dict[str, list[str]]:
        """What ``roles.json`` says: each role's people (``compute_operators: [...]``)."""
        return {
            f"{role}s": sorted(n for n, p in self.people.items() if role in p.roles)
            for role in ROLES
        }


def admin_password(path: Path) -> str:
    """The admin user's password, kept in a file of its own (0600), made on first use."""
    if path.exists():
        password: str = json.loads(path.read_text())["password"]
        return password
    password = secrets.token_urlsafe(24)
    write_private(path, json.dumps({"user": ADMIN_USER, "password": password}, indent=2) + "\n")
    return password


def system_password(path: Path) -> str:
    """The system user's password, kept in the admin's file (``admin.json``, 0600) as
    ``system_user`` and ``system_password``: added on first use, the admin's kept."""
    kept: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if kept.get("system_password"):
        return str(kept["system_password"])
    if "password" not in kept:
        kept = {"user": ADMIN_USER, "password": admin_password(path)}
    password = secrets.token_urlsafe(24)
    kept.update(system_user=SYSTEM_USER, system_password=password)
    write_private(path, json.dumps(kept, indent=2) + "\n")
    return password


#: how long after a request reached an agent it may still answer it: the longest
#: ``request_timeout_s`` a deployment may have, the gateway's second beyond it and a margin
#: for delivery; the server's default (2 minutes) would refuse, silently, any answer later
ANSWER_EXPIRES_S = MAX_REQUEST_TIMEOUT_S + 60


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


def _permissions(
    publish: Iterable[str],
    subscribe: Iterable[str],
    *,
    deny_publish: Iterable[str] = (),
    responses: int = 0,
    expires_s: float | None = None,
) -> str:
    """``responses``: how many messages may answer each request the user received, for
    ``expires_s`` seconds after it arrived (None: the server's default, 2 minutes)."""
    pub = f"allow: {json.dumps(list(publish))}"
    if deny := list(deny_publish):
        pub += f", deny: {json.dumps(deny)}"
    extra = ""
    if responses:
        expires = "" if expires_s is None else f", expires: {_q(f'{expires_s:g}s')}"
        extra = f", allow_responses: {{max: {responses}{expires}}}"
    return (
        f"permissions: {{publish: {{{pub}}}, subscribe: {{allow: {json.dumps(list(subscribe))}}}"
        f"{extra}}}"
    )


def _user(name: str, password: str, permissions: str | None) -> str:
    body = f"user: {_q(name)}, password: {_q(password)}"
    return f"{{{body}, {permissions}}}" if permissions else f"{{{body}}}"


def person_publish(person: Person) -> list[str]:
    """The subjects ``person`` may publish to: its roles' command families and the queries, in
    any workspace (membership is checked by the services), upload sessions (data scientists),
    the services' broadcasts, and the read-only JetStream API imported under
    ``PEOPLE_JS_PREFIX``."""
    families = dict.fromkeys(f for role in person.roles for f in ROLE_COMMANDS[role])
    subjects = [f"cairn.cmd.*.{f}" for f in families]
    subjects.append("cairn.q.*.>")
    if DATA_SCIENTIST in person.roles:
        subjects.append("cairn.artifacts.>")
    subjects += [
        _BROADCASTS,
        f"{PEOPLE_JS_PREFIX}.>",
        "$JS.FC.>",
        "$JS.API.INFO",  # answered "not enabled" by USERS itself: how a client finds the prefix
    ]
    return subjects


def _person(name: str, person: Person) -> str:
    permissions = _permissions(person_publish(person), [f"_INBOX_{name}.>"])
    return _user(name, person.password, permissions)


def _agent(password: str) -> str:
    """The agents' user: its compute targets' job tickets (pull and acknowledge), its heartbeat
    key, its jobs' logs, its reports and its jobs' commands; the events of the runs it runs
    (to see a cancel), pings, its inbox."""
    kv = _KV_AGENTS
    publish = [
        "$JS.API.INFO",
        f"$JS.API.CONSUMER.INFO.{JOBS.name}.*",
        f"$JS.API.CONSUMER.CREATE.{JOBS.name}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{JOBS.name}.*",
        f"$JS.ACK.{JOBS.name}.>",
        f"$JS.API.STREAM.INFO.{kv}",
        f"$JS.API.CONSUMER.CREATE.{kv}",
        f"$JS.API.CONSUMER.CREATE.{kv}.>",
        f"$JS.API.CONSUMER.INFO.{kv}.*",
        f"$JS.API.CONSUMER.DELETE.{kv}.>",
        f"$JS.API.DIRECT.GET.{kv}.>",
        f"$KV.{AGENTS_BUCKET.bucket}.>",
        "$JS.FC.>",
        "cairn.logs.>",
        *(f"cairn.cmd.*.{f}" for f in AGENT_COMMANDS),
        "cairn.q.>",
        "cairn.artifacts.>",
    ]
    # ``cairn.serve.>``: the requests of the deployments whose replicas it runs (in each
    # deployment's queue group), answered through ``responses`` (a large answer in chunks)
    subscribe = [f"_INBOX_{AGENT_USER}.>", "cairn.ev.*.run.*", PING_SUBJECT, "cairn.serve.>"]
    permissions = _permissions(
        publish, subscribe, responses=MAX_ANSWER_CHUNKS, expires_s=ANSWER_EXPIRES_S
    )
    return _user(AGENT_USER, password, permissions)


def _scorer(password: str) -> str:
    """The gateway's scoring user: a request to a deployment's replicas, and the traffic of
    an endpoint, which the scheduler answers only with one of that endpoint's keys; its
    inbox; the endpoints' events as they are appended (key digests, traffic, deletion: a
    route the gateway keeps is dropped on them). It cannot send a command, read a stream,
    another aggregate's events or another query."""
    publish = ["cairn.serve.>", "cairn.q.*.endpoint.route"]
    subscribe = [f"_INBOX_{SCORER_USER}.>", "cairn.ev.*.endpoint.*"]
    return _user(SCORER_USER, password, _permissions(publish, subscribe))


def _service(password: str) -> str:
    """The services' user: every ``cairn.`` subject and the JetStream API, but no stream
    deletion, purge, reconfiguration, snapshot or restore, and no membership command (the
    admin's)."""
    # replies: to people through their import (``_R_``) and to the stack's own users; one
    # connection may carry several services, each answering the same broadcast
    replies = [
        "_R_.>",
        f"_INBOX_{SERVICE_USER}.>",
        f"_INBOX_{AGENT_USER}.>",
        f"_INBOX_{SCORER_USER}.>",
    ]
    publish = ["cairn.>", "$JS.>", "$KV.>", *replies]
    # advisories: the scheduler's ``MAX_DELIVERIES`` only (the API audit advisories carry
    # the admin's requests and answers, a restore's chunk subject among them)
    subscribe = [
        "cairn.>",
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>",
        f"_INBOX_{SERVICE_USER}.>",
    ]
    permissions = _permissions(publish, subscribe, deny_publish=_ADMIN_ONLY, responses=1)
    return _user(SERVICE_USER, password, permissions)


def accounts_config(
    creds: Credentials, admin_password: str | None = None, system_password: str | None = None
) -> list[str]:
    """The ``accounts`` block of the server's config; with ``system_password`` also the
    system account (``SYSTEM_ACCOUNT``, its one user ``SYSTEM_USER``: server requests only)."""
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
    for name, _ in creds.users():
        exports.append(f"{{stream: {_q(f'_INBOX_{name}.>')}}}")
        imports.append(
            f"{{stream: {{account: {SERVICE_ACCOUNT}, subject: {_q(f'_INBOX_{name}.>')}}}}}"
        )
    services = [_service(creds.service_password), _agent(creds.agent_password)]
    if creds.scorer_password:
        services.append(_scorer(creds.scorer_password))
    if admin_password is not None:
        services.append(_user(ADMIN_USER, admin_password, None))
    people = [_person(name, p) for name, p in creds.users()]
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
        *_system_account(system_password),
        "}",
    ]


def _system_account(password: str | None) -> list[str]:
    if password is None:
        return []
    return [
        f"  {SYSTEM_ACCOUNT} {{",
        f"    users: [{_user(SYSTEM_USER, password, None)}]",
        "  }",
    ]


def embedded_agent_settings(settings: Settings) -> Settings:
    """The settings an agent connects with: a person's settings over an embedded home (the
    local agent of ``cairn up``, ``cairn agent`` on the same machine) become the home's agent
    user, which lives in the services' account; any other settings stay as they are (an
    agent on a worker machine is given agent credentials)."""
    return _as_stack_user(settings, AGENT_USER, "agent_password")


def embedded_service_settings(settings: Settings) -> Settings:
    """The settings ``cairn serve`` connects with: a person's settings over an embedded home
    become the home's service user (``credentials.json`` keeps its password); any other
    settings stay as they are (a service elsewhere is given the service user's credentials)."""
    return _as_stack_user(settings, SERVICE_USER, "service_password")


def _as_stack_user(settings: Settings, user: str, key: str) -> Settings:
    path = settings.home_path / "credentials.json"
    if settings.nats_creds or not path.is_file():
        return settings
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return settings
    if settings.nats_user not in raw.get("people", {}) or not raw.get(key):
        return settings
    return msgspec.structs.replace(settings, nats_user=user, nats_password=str(raw[key]))
