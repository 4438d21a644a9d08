"""The embedded server's credentials: an older file is completed, people are checked by name
and role, the role file follows them, and an agent given a person's settings becomes the agent
user."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import msgspec
import pytest

from cairn.embedded import NatsServer
from cairn.embedded._auth import (
    AGENT_USER,
    COMPUTE_OPERATOR,
    DATA_SCIENTIST,
    LOCAL_ROLES,
    Credentials,
    embedded_agent_settings,
)
from cairn.errors import InvalidInput
from cairn.settings import Settings


def test_an_older_file_keeps_its_passwords_and_gains_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    old = {"service_password": "s", "client_user": "ann", "client_password": "a"}
    path.write_text(json.dumps(old))
    creds = Credentials.load_or_create(path)
    assert (creds.service_password, creds.client_user, creds.client_password) == ("s", "ann", "a")
    assert creds.people["ann"].roles == LOCAL_ROLES and creds.agent_password
    assert Credentials.load_or_create(path) == creds  # written back, stable
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["Ann", "cairn-x", "a.b", "", "x" * 40, "-a"])
def test_a_person_needs_a_plain_name(tmp_path: Path, name: str) -> None:
    creds = Credentials.load_or_create(tmp_path / "credentials.json")
    with pytest.raises(InvalidInput):
        creds.with_person(name, [DATA_SCIENTIST])


@pytest.mark.parametrize("roles", [[], ["admin"], ["data_scientist", "root"]])
def test_a_person_needs_known_roles(tmp_path: Path, roles: list[str]) -> None:
    creds = Credentials.load_or_create(tmp_path / "credentials.json")
    with pytest.raises(InvalidInput):
        creds.with_person("bea", roles)


def test_people_and_their_roles_reach_the_role_file_and_the_config(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, port=0)
    password = server.add_person("olga", (COMPUTE_OPERATOR,))
    roles = json.loads((tmp_path / "roles.json").read_text())
    assert server.credentials is not None
    assert roles["compute_operators"] == sorted(["olga", server.credentials.client_user])
    assert "olga" not in roles["data_scientists"]
    conf = server.accounts_text()
    assert password in conf and '"_INBOX_olga.>"' in conf and "share: true" in conf
    again = NatsServer(tmp_path, port=0)
    assert again.credentials == server.credentials


def test_an_agent_with_a_persons_settings_connects_as_the_agent_user(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, port=0)
    assert server.credentials is not None
    creds = server.credentials
    person = Settings(home=str(tmp_path), nats_user=creds.client_user, nats_password="x")
    agent = embedded_agent_settings(person)
    assert (agent.nats_user, agent.nats_password) == (AGENT_USER, creds.agent_password)
    elsewhere = msgspec.structs.replace(person, home=str(tmp_path / "other"))
    assert embedded_agent_settings(elsewhere) is elsewhere
    given = msgspec.structs.replace(person, nats_user=AGENT_USER)
    assert embedded_agent_settings(given) is given
