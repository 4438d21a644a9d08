"""Job inputs read from URLs: checked at submit, downloaded by the agent under their own
file names. The files are served over plain http on 127.0.0.1 (the client is the same for
https)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cairn.data import check_url, download_url, url_file_name
from cairn.errors import InvalidInput
from cairn.rpc import Client
from cairn.sdk import Dataset, load_job_file
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli, run_cli


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """Files under ``tmp_path/www`` at the returned base URL."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "data.csv").write_text("x\n1\n2\n")
    (root / "secret.txt").write_text("fine\n")
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


JOB = """\
type: command
code: ./src
command: python show.py ${{inputs.f}}
inputs:
  f: {type: uri_file, path: "URL"}
experiment_name: url-inputs
"""

SHOW = """\
import os, sys
path = sys.argv[1]
print("name=" + os.path.basename(path), "parent=" + os.path.relpath(os.path.dirname(path)))
print("content=" + open(path).read().replace("\\n", "|"))
"""


def _job(tmp_path: Path, url: str, kind: str = "uri_file") -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "show.py").write_text(SHOW)
    job = tmp_path / "job.yml"
    job.write_text(JOB.replace("URL", url).replace("uri_file", kind))
    return job


async def test_a_url_input_arrives_under_its_own_name(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path, served: str
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    _job(tmp_path, f"{served}/data.csv")
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    assert "name=data.csv parent=inputs/f" in out and "content=x|1|2|" in out

    # a path that climbs out names only its last segment, inside the input's folder
    _job(tmp_path, f"{served}/sub/..%2F..%2Fsecret.txt")
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    assert "name=secret.txt parent=inputs/f" in out and "content=fine|" in out

    # a missing file fails the job, naming the URL
    _job(tmp_path, f"{served}/missing.csv")
    code, out, err = await run_cli(
        "job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path
    )
    assert code != 0
    assert f"{served}/missing.csv" in out + err and "404" in out + err


@pytest.mark.parametrize(
    ("url", "kind", "error"),
    [
        ("https://user:pw@example.com/a.csv", "uri_file", "credentials"),
        ("https://example.com/folder/", "uri_file", "names a folder"),
        ("https://example.com/data.csv", "uri_folder", "a URL names one file"),
        ("wasbs://c@acct.blob.core.windows.net/a.csv", "uri_file", "adlfs"),
        ("s3://bucket/a.csv", "uri_file", "Datastore.register_s3"),
        ("https:///a.csv", "uri_file", "names no host"),
    ],
)
def test_bad_urls_are_refused_at_submit(tmp_path: Path, url: str, kind: str, error: str) -> None:
    with pytest.raises(InvalidInput, match=error.replace(".", r"\.")):
        load_job_file(_job(tmp_path, url, kind))


def test_url_file_names_stay_inside_the_folder() -> None:
    assert url_file_name("https://h/a/../../x.csv") == "x.csv"
    assert url_file_name("https://h/a/%2e%2e%2f%2e%2e%2fy.csv") == "y.csv"
    assert url_file_name("https://h/a/..%5C..%5Cz.csv") == ".._.._z.csv"
    assert url_file_name("https://h/a/%2e%2e") is None
    assert url_file_name("https://h/") is None
    assert check_url("https://h/d.csv?sig=1", "x") == "https://h/d.csv?sig=1"


async def test_a_local_file_input_keeps_its_name(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    (tmp_path / "rows.csv").write_text("a\nb\n")
    _job(tmp_path, "rows.csv")
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    assert "name=rows.csv parent=inputs/f" in out and "content=a|b|" in out


def test_a_dataset_from_a_url_is_refused_naming_the_way_that_works() -> None:
    with pytest.raises(InvalidInput, match="uri_file input"):
        Dataset.File.from_files("https://example.com/a.csv")
    with pytest.raises(InvalidInput, match="uri_file input"):
        Dataset.Tabular.from_delimited_files(["https://example.com/a.csv"])


async def test_a_download_over_the_size_bound_stops(tmp_path: Path, served: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with pytest.raises(InvalidInput, match="over the bound of 3"):
        await download_url(f"{served}/data.csv", folder, max_bytes=3)
    got = await download_url(f"{served}/data.csv", folder, max_bytes=6)
    assert got == folder / "data.csv" and got.read_text() == "x\n1\n2\n"
