"""Data read from URLs: job inputs checked at submit and downloaded by the agent under their
own file names (cached by URL and validator), and datasets defined from URLs. The files are
served over plain http on 127.0.0.1 (the client is the same for https); S3 URLs are in
``tests/test_s3_urls.py``."""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

import msgspec
import pytest

from cairn.data import check_url, download_url, same_bytes, url_file_name
from cairn.embedded import NatsServer
from cairn.errors import DataChanged, InvalidInput, InvalidName
from cairn.proto.assets import DatasetSpec
from cairn.proto.commands import CreateExperiment
from cairn.proto.jobs import JobInput, JobSpec, ListJobs, SubmitJob
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, Dataset, Input, load_job_file, new_id
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_data import data_env
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.test_cli import cli, run_cli


class _Counting(SimpleHTTPRequestHandler):
    """Serves a folder and counts the GETs of each path (HEADs are not counted)."""

    gets: dict[str, int]

    def do_GET(self) -> None:
        self.gets[self.path] = self.gets.get(self.path, 0) + 1
        if not self._redirected():
            super().do_GET()

    def do_HEAD(self) -> None:
        if not self._redirected():
            super().do_HEAD()

    def _redirected(self) -> bool:
        """``/redirect-to/<quoted URL>``: a redirect to that URL."""
        if not self.path.startswith("/redirect-to/"):
            return False
        self.send_response(302)
        self.send_header("Location", unquote(self.path.removeprefix("/redirect-to/")))
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def log_message(self, format: str, *args: object) -> None:
        pass


class Served(str):
    """The base URL of a local http server, and the GETs it answered per path."""

    gets: dict[str, int]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """Files under ``tmp_path/www`` at the returned base URL."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "data.csv").write_text("x\n1\n2\n")
    (root / "secret.txt").write_text("fine\n")
    gets: dict[str, int] = {}
    handler_class = type("Handler", (_Counting,), {"gets": gets})
    handler = functools.partial(handler_class, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = Served(f"http://127.0.0.1:{server.server_address[1]}")
        base.gets = gets
        yield base
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
        ("s3://key:secret@bucket/a.csv", "uri_file", "credentials"),
        ("https://example.com/folder/", "uri_file", "names a folder"),
        ("https://example.com/data.csv", "uri_folder", "URL names one file"),
        ("wasbs://c@acct.blob.core.windows.net/a.csv", "uri_file", "need adlfs installed"),
        ("abfss://fs@acct.dfs.core.windows.net/raw/", "uri_folder", "need adlfs installed"),
        ("gs://bucket/a.csv", "uri_file", "need gcsfs installed"),
        ("sftp://host/a.csv", "uri_file", "need paramiko installed"),
        ("s3a://bucket/a.csv", "uri_file", "as s3://"),
        ("nosuchfs://host/a.csv", "uri_file", "no filesystem reads nosuchfs://"),
        ("file:///etc/passwd", "uri_file", "reads the machine that moves the data"),
        ("memory://host/a.csv", "uri_folder", "reads the machine that moves the data"),
        ("zip://a.csv::https://example.com/x.zip", "uri_file", "chains filesystems"),
        ("s3://bucket/raw/../../etc/passwd", "uri_file", "key 'raw/../../etc/passwd'"),
        ("s3://bucket//etc/passwd?x=1", "uri_file", "without ?query"),
        ("https:///a.csv", "uri_file", "names no host"),
    ],
)
def test_bad_urls_are_refused_at_submit(tmp_path: Path, url: str, kind: str, error: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(error)):
        load_job_file(_job(tmp_path, url, kind))


async def test_a_url_of_a_missing_driver_is_refused_before_anything_is_queued(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    """By the CLI, and by the scheduler for a client that skips the SDK's check: a typed
    error naming the package, and no run."""
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    url = "wasbs://c@acct.blob.core.windows.net/a.csv"
    _job(tmp_path, url)
    code, out, err = await run_cli("job", "create", "--file", "job.yml", env=env, cwd=tmp_path)
    assert code != 0 and "adlfs" in err and "queued" not in out + err
    await client.send(CreateExperiment(command_id=new_id(), name="urls"))
    job = JobSpec(command=["true"], inputs=[JobInput(name="f", url=url)])
    cmd = SubmitJob(command_id=new_id(), run_id=new_id(), experiment_name="urls", job=job)
    with pytest.raises(InvalidInput, match="need adlfs installed"):
        await client.send(cmd)
    bare = msgspec.structs.replace(
        cmd,
        command_id=new_id(),
        job=JobSpec(command=["true"], inputs=[JobInput(name="f", url="nosuchfs://h/a.csv")]),
    )
    with pytest.raises(InvalidInput, match="no filesystem reads nosuchfs://"):
        await client.send(bare)
    runs = (await client.ask(ListJobs())).data
    assert runs == []


async def test_a_changed_url_is_fetched_again_and_an_unchanged_one_is_not(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path, served: Served
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    _job(tmp_path, f"{served}/data.csv")
    for _ in range(2):
        out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
        assert "name=data.csv parent=inputs/f" in out and "content=x|1|2|" in out
    assert served.gets["/data.csv"] == 1, "the second job read the agent's cached copy"
    (tmp_path / "www" / "data.csv").write_text("x\n1\n2\n3\n")  # another size, another validator
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    assert "content=x|1|2|3|" in out
    assert served.gets["/data.csv"] == 2


def test_url_file_names_stay_inside_the_folder() -> None:
    assert url_file_name("https://h/a/../../x.csv") == "x.csv"
    assert url_file_name("https://h/a/%2e%2e%2f%2e%2e%2fy.csv") == "y.csv"
    assert url_file_name("https://h/a/..%5C..%5Cz.csv") == ".._.._z.csv"
    assert url_file_name("https://h/a/%2e%2e") is None
    assert url_file_name("https://h/") is None
    assert check_url("https://h/d.csv?sig=1", "x") == "https://h/d.csv?sig=1"


def test_validators_compare_by_the_strongest_field_both_carry() -> None:
    assert same_bytes('etag="a";modified=M;size=1', 'etag=W/"a";modified=N;size=')
    assert not same_bytes('etag="a";modified=M;size=1', 'etag="b";modified=M;size=1')
    assert same_bytes("etag=;modified=M;size=6", "etag=;modified=M;size=6")
    assert not same_bytes("etag=;modified=M;size=6", "etag=;modified=N;size=6")
    assert not same_bytes("mtime=5;size=6", "mtime=;size=7")
    assert not same_bytes("etag=;modified=M;size=6", "etag=;modified=M;size=8")


async def test_a_local_file_input_keeps_its_name(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    (tmp_path / "rows.csv").write_text("a\nb\n")
    _job(tmp_path, "rows.csv")
    out = await cli("job", "create", "--file", "job.yml", "--stream", env=env, cwd=tmp_path)
    assert "name=rows.csv parent=inputs/f" in out and "content=a|b|" in out


def test_an_sdk_input_takes_urls_as_a_job_file_does(tmp_path: Path) -> None:
    given = Input(type="uri_folder", path="s3://lake/raw/2026/", mode="download")
    assert str(given) == "${{inputs.2026}}"
    assert given.job_binding() == JobInput(name="2026", mode="download", url="s3://lake/raw/2026/")
    named = Input(type="uri_file", path="https://h/d.csv", name="d", path_on_compute="data")
    assert named.job_binding() == JobInput(
        name="d", mode="mount", url="https://h/d.csv", path_on_compute="data"
    )
    with pytest.raises(InvalidInput, match="need adlfs installed"):
        Input(type="uri_file", path="wasbs://c@acct.blob.core.windows.net/a.csv")
    with pytest.raises(InvalidInput, match="URL names one file"):
        Input(type="uri_folder", path="https://h/d.csv")
    (tmp_path / "here.csv").write_text("x\n")
    with pytest.raises(InvalidInput, match="local path"):
        Input(type="uri_file", path=str(tmp_path / "here.csv"))


def test_a_dataset_keeps_its_urls_and_refuses_bad_ones() -> None:
    ds = Dataset.File.from_files("https://example.com/a.csv")
    assert ds.spec.urls == ["https://example.com/a.csv"] and ds.spec.paths == []
    table = Dataset.Tabular.from_delimited_files(["s3://lake/t/a.csv", "https://h/b.csv"])
    assert table.spec.urls == ["s3://lake/t/a.csv", "https://h/b.csv"]
    with pytest.raises(InvalidInput, match="need adlfs installed"):
        Dataset.Tabular.from_delimited_files(["wasbs://c@acct.blob.core.windows.net/a.csv"])
    with pytest.raises(InvalidInput, match="no filesystem reads nosuchfs://"):
        Dataset.File.from_files("nosuchfs://h/a.csv")


async def test_a_tabular_dataset_from_an_https_csv_is_read_in_and_out_of_a_job(
    client: Client,
    client_settings: Settings,
    nats_server: NatsServer,
    agents: Agents,
    tmp_path: Path,
    served: Served,
) -> None:
    await agents.start()
    env = data_env(client_settings, nats_server, client.workspace, tmp_path / "home")
    got = await run_script(
        "url_dataset_script.py",
        f"{served}/data.csv",
        f"{served}/secret.txt",
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert got["before"] == [1, 2] and got["after"] == [1, 2]
    assert got["urls"] == [f"{served}/data.csv"]
    assert got["url_files"] == [["data.csv", 6, True]], "registration records the validator"
    assert got["status"] == "Completed"
    assert got["metrics"] == {"rows": 2, "total": 3}
    assert got["input"] == [
        "${{inputs.csv}}",
        "Completed",
        {"name": "data.csv", "lines": 3, "other": "secret.txt"},
    ]


async def test_a_folder_url_arrives_with_its_layout_and_a_climbing_name_is_refused(
    tmp_path: Path,
) -> None:
    """An fsspec folder (here fsspec's in-memory filesystem, which jobs may not name: the
    reader itself is what is tested) lands with its relative paths; a file whose name climbs
    out is refused by name before anything is written."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/urls-test/d/a.csv": b"a", "/urls-test/d/sub/b.csv": b"bb"})
    folder = tmp_path / "in"
    folder.mkdir()
    try:
        got = await download_url("memory://urls-test/d", folder)
        assert got == folder
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.csv")) == [
            "a.csv",
            "sub/b.csv",
        ]
        assert (folder / "sub" / "b.csv").read_bytes() == b"bb"
        fs.pipe({"/urls-test/e/x/../../../escape.csv": b"x"})
        with pytest.raises(InvalidName, match=re.escape("x/../../../escape.csv")):
            await download_url("memory://urls-test/e", tmp_path / "other")
        assert not (tmp_path / "escape.csv").exists() and not (tmp_path / "other").exists()
    finally:
        fs.rm("/urls-test", recursive=True)


async def test_a_download_over_the_size_bound_stops(tmp_path: Path, served: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with pytest.raises(InvalidInput, match="over the bound of 3"):
        await download_url(f"{served}/data.csv", folder, max_bytes=3, allow_private=True)
    got = await download_url(f"{served}/data.csv", folder, max_bytes=6, allow_private=True)
    assert got == folder / "data.csv" and got.read_text() == "x\n1\n2\n"


async def test_a_url_dataset_version_checks_its_validator_and_a_snapshot_keeps_the_bytes(
    ws: AsyncWorkspace, tmp_path: Path, served: Served
) -> None:
    url = f"{served}/data.csv"
    spec = DatasetSpec(kind="tabular", paths=[], urls=[url])
    ref = msgspec.convert((await ws.datasets.register("by ref", spec))["spec"], DatasetSpec)
    snap = await ws.datasets.register("by copy", spec, snapshot=True)
    copied = msgspec.convert(snap["spec"], DatasetSpec)
    assert [f.blob is None for f in ref.url_files] == [True]
    assert [f.blob is not None for f in copied.url_files] == [True]
    (tmp_path / "www" / "data.csv").write_text("x\n1\n2\n3\n")
    with pytest.raises(DataChanged, match=re.escape(url)):
        await ws.datasets.materialise(ref, tmp_path / "ref")
    got = await ws.datasets.materialise(copied, tmp_path / "copy")
    assert [p.read_text() for p in got] == ["x\n1\n2\n"], "the snapshot's bytes, not the URL's"


async def test_the_cli_registers_a_dataset_from_a_url(
    client: Client, client_settings: Settings, tmp_path: Path, served: Served
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    url = f"{served}/data.csv"
    made = json.loads(
        await cli(
            "dataset", "create", "web", "--path", url, "--tabular", "--json", env=env, cwd=tmp_path
        )
    )
    assert made["files"] == [f"{url} (6 B)"] and made["spec"]["urls"] == [url]
    await cli("dataset", "download", "web", "out", env=env, cwd=tmp_path)
    assert (tmp_path / "out" / "data.csv").read_text() == "x\n1\n2\n"


async def test_private_hosts_and_redirects_off_https_are_refused(
    tmp_path: Path, served: Served
) -> None:
    """By default a URL whose host is or resolves to a loopback, private or link-local
    address is refused before any request (the metadata service, the cluster's own
    services); ``url_allow_private_hosts`` allows them. A redirect is followed only to an
    https:// URL, whatever the setting."""
    folder = tmp_path / "private"
    for url in (
        f"{served}/data.csv",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/x.csv",
        "https://[::1]/x.csv",
        "http://localhost:1/x.csv",
    ):
        with pytest.raises(InvalidInput, match="url_allow_private_hosts"):
            await download_url(url, folder)
    assert served.gets == {}
    got = await download_url(f"{served}/data.csv", folder, allow_private=True)
    assert got.read_text() == "x\n1\n2\n"
    to_http = f"{served}/redirect-to/{quote(served + '/data.csv', safe='')}"
    with pytest.raises(InvalidInput, match="https:// URLs only"):
        await download_url(to_http, tmp_path / "redirected", allow_private=True)
    to_metadata = f"{served}/redirect-to/{quote('http://169.254.169.254/x', safe='')}"
    with pytest.raises(InvalidInput, match="https:// URLs only"):
        await download_url(to_metadata, tmp_path / "redirected", allow_private=True)
    assert not (tmp_path / "redirected").exists() or not any((tmp_path / "redirected").iterdir())
