"""The embedded server's credentials: an older file is completed, people are checked by name
and role, the role file follows them, an API token is a user with its person's permissions,
and an agent given a person's settings becomes the agent user."""

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
    person_publish,
)
from cairn.embedded._users import create_token, list_tokens, remove_user, revoke_token
from cairn.errors import InvalidInput, NotFound
from cairn.settings import Settings
from cairn.tokens import parse_token


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


def test_a_token_is_a_user_with_its_persons_permissions_and_its_own_inbox(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, port=0)
    server.add_person("bea", (DATA_SCIENTIST,))
    row, token, loaded = create_token(tmp_path, "bea", "ci")
    assert not loaded and row["user"] == "bea" and row["name"] == "ci"
    user, secret = parse_token(token)
    assert user == f"bea~{row['id']}"
    conf = (tmp_path / "nats" / "accounts.conf").read_text()
    line = next(ln for ln in conf.splitlines() if f'user: "{user}"' in ln)
    bea = next(ln for ln in conf.splitlines() if 'user: "bea"' in ln)
    assert secret in line and json.dumps(person_publish(server.credentials.people["bea"])) in line
    assert line.replace(user, "bea").replace(secret, "") == bea.replace(
        server.credentials.people["bea"].password, ""
    )
    assert f'{{stream: "_INBOX_{user}.>"}}' in conf  # what a consumer delivers to it
    roles = (tmp_path / "roles.json").read_text()
    assert "~" not in roles  # a token acts as its person: no role of its own
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600
    assert [r["id"] for r in list_tokens(tmp_path, "bea")] == [row["id"]]
    assert revoke_token(tmp_path, row["id"]) == (row, False)
    assert user not in (tmp_path / "nats" / "accounts.conf").read_text()
    with pytest.raises(NotFound):
        revoke_token(tmp_path, row["id"])

    kept, _, _ = create_token(tmp_path, "bea")
    remove_user(tmp_path, "bea")  # a person's tokens go with them
    assert list_tokens(tmp_path) == []
    assert kept["id"] not in (tmp_path / "nats" / "accounts.conf").read_text()


def test_tokens_are_refused_what_names_no_person(tmp_path: Path) -> None:
    NatsServer(tmp_path, port=0)
    for person, name, error in [
        ("nobody", "", NotFound),
        ("bea~x", "", InvalidInput),
        (None, "x" * 201, InvalidInput),
        (None, "line\nbreak", InvalidInput),
    ]:
        with pytest.raises(error):
            create_token(tmp_path, person, name)
    with pytest.raises(NotFound):
        list_tokens(tmp_path, "nobody")


@pytest.mark.parametrize(
    "edit",
    [
        {"client_user": "ann~1"},
        {"people": {"bea~12345678": {"password": "p", "roles": ["auditor"]}}},
        {"tokens": {"0a1b2c3d": {"person": "gone", "password": "p", "name": "", "created": "t"}}},
        {"tokens": {"BAD.ID": {"person": "ann", "password": "p", "name": "", "created": "t"}}},
    ],
)
def test_a_file_that_names_a_person_with_a_token_mark_is_refused(
    tmp_path: Path, edit: dict[str, object]
) -> None:
    """Only ``cairn token`` makes ``<person>~<id>`` users: a person of such a name, or a token
    of no person, written into the file by hand, is refused when the file is read."""
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"client_user": "ann", "client_password": "a", **edit}))
    with pytest.raises(InvalidInput):
        Credentials.load_or_create(path)
