"""Data read from URLs: checked when a job is submitted or a dataset defined, read by the
process that moves the data (the agent for a job, the SDK for a dataset).

* ``http://`` and ``https://`` URLs name one file each, fetched with httpx (bounded size,
  timeout and redirects); http has no listing, so a folder URL is refused.
* ``s3://bucket/key`` is read through the workspace's registered S3 datastore of that bucket
  (:func:`resolve_s3_url`), with its sealed credentials, never with whatever credentials the
  reading machine happens to hold.
* Any other scheme is read through fsspec when a filesystem for it is installed, with no
  credentials of the reading machine's where the driver can be told so (``anon``); a scheme
  without one is refused naming the package that provides it (``wasbs://`` and
  ``abfss://``: ``adlfs``; ``gs://``: ``gcsfs``), an unknown one naming the scheme.
  Schemes that read the reading machine itself (``file://``, ``memory://``, caches,
  archives, chained ``a::b`` URLs) are refused.

A file keeps the last segment of its URL's path as its name, sanitised (no separators, no
``..``); a folder URL (an fsspec directory, an S3 prefix) arrives with its files' relative
layout, each relative path through the run-path chokepoint, so a key with ``..`` or an
absolute component is refused by name. A URL with credentials in it is refused: they would
be stored with the job or the dataset.

Each file read is identified by a *validator* (ETag, Last-Modified, size): the agent caches
by URL and validator, and a dataset version records it and checks it before reading.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from cairn.data._stores import local_target
from cairn.errors import DataChanged, InvalidInput, InvalidName, NotFound
from cairn.proto.assets import ListAssets
from cairn.proto.paths import validate_run_path
from cairn.rpc import Client

__all__ = [
    "MAX_URL_BYTES",
    "Remote",
    "check_url",
    "download_url",
    "fetch_remote",
    "is_url",
    "list_url",
    "resolve_s3_url",
    "s3_location",
    "same_bytes",
    "url_file_name",
]

#: the most bytes one URL input may download
MAX_URL_BYTES = 64 * 2**30
_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_MAX_REDIRECTS = 5
_HTTP = ("http", "https")
#: schemes whose driver registers itself (not in fsspec's table), and the package of each
_DRIVERS = {
    "wasb": "adlfs",
    "wasbs": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "az": "adlfs",
    "adl": "adlfs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
}
#: fsspec filesystems that read the reading machine itself (its disk, memory, caches of
#: other filesystems, archives on its disk) or wrap another URL: never a job's data source
_LOCAL = frozenset(
    {
        "file",
        "local",
        "asynclocal",
        "memory",
        "dir",
        "reference",
        "blockcache",
        "filecache",
        "simplecache",
        "cached",
        "zip",
        "tar",
        "libarchive",
        "generic",
        "async_wrapper",
        "asyncwrapper",
        "dask",
        "jlab",
        "jupyter",
        "pyscript",
    }
)
#: options telling a driver to read anonymously rather than with the machine's credentials
_ANON: dict[str, dict[str, Any]] = {
    **{s: {"anon": True} for s in ("wasb", "wasbs", "abfs", "abfss", "az")},
    "gs": {"token": "anon"},
    "gcs": {"token": "anon"},
    "hf": {"token": False},
}
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) other than a datastore or dataset URI."""
    m = _SCHEME.match(path)
    return m is not None and m.group(1).lower() not in ("azureml", "cairn")


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def _fsspec_missing(scheme: str, where: str) -> None:
    """Refuse a scheme no installed filesystem reads, naming the package that would."""
    if importlib.util.find_spec("fsspec") is None:
        raise InvalidInput(f"{where}: {scheme}:// URLs need fsspec installed (pip install fsspec)")
    fsspec: Any = importlib.import_module("fsspec")
    registry: Any = importlib.import_module("fsspec.registry")
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as e:
        package = _DRIVERS.get(scheme) or _package_in(str(e))
        if package is None:
            raise InvalidInput(
                f"{where}: {scheme}:// URLs need their fsspec filesystem's packages installed ({e})"
            ) from e
        raise InvalidInput(
            f"{where}: {scheme}:// URLs need {package} installed (pip install {package})"
        ) from e
    except ValueError as e:  # "Protocol not known"
        if scheme in _DRIVERS:
            package = _DRIVERS[scheme]
            raise InvalidInput(
                f"{where}: {scheme}:// URLs need {package} installed (pip install {package})"
            ) from e
        known = registry.known_implementations
        raise InvalidInput(
            f"{where}: no filesystem reads {scheme}:// URLs (not a scheme fsspec knows; known"
            f" remote ones include https, s3, {', '.join(sorted(set(_DRIVERS)))}"
            f"{', ' + ', '.join(sorted(k for k in known if k in ('ftp', 'sftp', 'webdav')))})"
        ) from e


def _package_in(message: str) -> str | None:
    """The package an ImportError of fsspec's names ("Install adlfs to access...", "No
    module named 'paramiko'", 'requires "paramiko"')."""
    m = re.search(
        r"install (\S+)|No module named '([^'.]+)|requires \"([^\"]+)\"", message, re.IGNORECASE
    )
    return next((g for g in m.groups() if g), None) if m else None


def check_url(url: str, where: str, *, folder: bool = False) -> str:
    """``url`` if data may be read from it (``folder``: as a folder); otherwise
    ``InvalidInput`` saying why (``where`` names the input)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if "::" in url:
        raise InvalidInput(f"{where}: {url!r:.200} chains filesystems (::); give one URL")
    # (``wasbs://container@account...`` names a container, not a user)
    if parts.password is not None or (scheme in (*_HTTP, "s3") and parts.username is not None):
        raise InvalidInput(
            f"{where}: the URL carries credentials (user:password@); they would be stored"
            " with the job: register a datastore with them, or use a URL that needs none"
        )
    if scheme in _LOCAL:
        raise InvalidInput(
            f"{where}: {scheme}:// reads the machine that moves the data, not a data source:"
            " upload the files to a datastore, or give a local path to upload with the job"
        )
    if not parts.hostname:
        raise InvalidInput(f"{where}: {url!r:.200} names no host")
    if scheme == "s3":
        s3_location(url, where)
        return url
    if scheme in ("s3a", "s3n"):  # s3fs would read them with the machine's own credentials
        raise InvalidInput(f"{where}: write {scheme}:// URLs as s3:// (read through a datastore)")
    if scheme in _HTTP:
        if folder:
            raise InvalidInput(
                f"{where}: an http(s) URL names one file (http has no listing): use type"
                " uri_file, or an s3:// or datastore URI for a folder"
            )
        if url_file_name(url) is None:
            raise InvalidInput(
                f"{where}: {url!r:.200} names a folder; an http(s) URL names one file"
                " (a folder has no listing over http): use a datastore for folders"
            )
        return url
    _fsspec_missing(scheme, where)
    return url


def s3_location(url: str, where: str = "URL") -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://`` URL; the key (or prefix, "" for the whole bucket)
    through the run-path chokepoint, so ``..`` or an absolute component is refused."""
    parts = urlsplit(url)
    bucket, key = parts.hostname or "", parts.path.strip("/")
    if not bucket:
        raise InvalidInput(f"{where}: {url!r:.200} names no bucket")
    if parts.query or parts.fragment:
        raise InvalidInput(f"{where}: an s3:// URL is s3://<bucket>/<key>, without ?query or #")
    if key:
        try:
            validate_run_path(key)
        except InvalidName as e:
            raise InvalidName(f"{where}: key {key!r:.200} of {url!r:.200}: {e}") from e
    return bucket, key


async def resolve_s3_url(client: Client, url: str, where: str = "URL") -> tuple[str, str]:
    """The registered S3 datastore that reads ``s3://bucket/key``, and the key's path inside
    it: the datastore of that bucket whose prefix holds the key (the longest such prefix).
    None registered, or two with the same prefix, is ``InvalidInput`` naming what to do."""
    bucket, key = s3_location(url, where)
    rows = (await client.ask(ListAssets(asset_kind="datastore"))).data
    found: list[tuple[int, str, str]] = []
    for row in rows:
        spec = row.get("spec") or {}
        if spec.get("kind") != "s3" or spec.get("bucket") != bucket:
            continue
        prefix = str(spec.get("prefix") or "").strip("/")
        if not prefix:
            found.append((0, row["name"], key))
        elif key == prefix or key.startswith(prefix + "/"):
            found.append((len(prefix), row["name"], key[len(prefix) :].strip("/")))
    if not found:
        raise InvalidInput(
            f"{where}: no registered S3 datastore reads bucket {bucket!r}"
            + (f" at {key!r}" if key else "")
            + ": register it with Datastore.register_s3 (its endpoint and credentials), and"
            " s3:// URLs of that bucket are read through it"
        )
    found.sort(reverse=True)
    best = [f for f in found if f[0] == found[0][0]]
    if len(best) > 1:
        names = ", ".join(sorted(f[1] for f in best))
        raise InvalidInput(
            f"{where}: datastores {names} all read bucket {bucket!r} there: name one with"
            " azureml://datastores/<name>/paths/<path>"
        )
    return best[0][1], best[0][2]


def url_file_name(url: str) -> str | None:
    """The last segment of the URL's path, made a safe file name; None for a folder."""
    segment = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\\/]", "_", segment).strip()
    if name in ("", ".", ".."):
        return None
    return name[:200]


@dataclass(frozen=True)
class Remote:
    """One file at a URL as its server describes it now: where it lands (``path``, relative),
    its size (-1 when not said) and its validator ("" when the server gives none)."""

    url: str
    path: str
    size: int
    validator: str
    #: whether the URL named a folder (the file is one of its files)
    in_folder: bool = False


def _http_validator(headers: httpx.Headers) -> str:
    etag, modified = headers.get("etag", ""), headers.get("last-modified", "")
    if not etag and not modified:
        return ""
    return f"etag={etag};modified={modified};size={headers.get('content-length', '')}"


def _fields(validator: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in validator.split(";") if "=" in p)


def same_bytes(recorded: str, now: str) -> bool:
    """Whether two validators describe the same bytes: not when both give sizes that
    differ; else by ETag when both have one (weak or strong), else by modification time
    when both have one, else by size. (A server may answer ``HEAD`` and ``GET`` with
    different headers; the strongest one both carry decides.)"""
    a, b = _fields(recorded), _fields(now)
    if a.get("size") and b.get("size") and a["size"] != b["size"]:
        return False
    for keys in (("etag", "ETag", "md5"), ("modified", "mtime", "LastModified", "last_modified")):
        x = next((a[k] for k in keys if a.get(k)), "")
        y = next((b[k] for k in keys if b.get(k)), "")
        if x and y:
            return x.removeprefix("W/") == y.removeprefix("W/")
    return a.get("size", "") == b.get("size", "")


def _info_validator(info: dict[str, Any]) -> str:
    parts = [
        f"{k}={info[k]}"
        for k in ("ETag", "etag", "md5", "mtime", "LastModified", "last_modified", "modified")
        if info.get(k) not in (None, "")
    ]
    return ";".join([*parts, f"size={info.get('size')}"]) if parts else ""


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    if mapped is not None:
        ip = mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def _check_public(url: httpx.URL) -> None:
    """Refuse ``url`` when its host is, or resolves to, a loopback, private, link-local,
    multicast or reserved address (the cloud metadata service at 169.254.169.254, the
    cluster's own services): a URL given by a member is fetched with the reading machine's
    network position."""
    host = url.host
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        except OSError as e:
            raise InvalidInput(f"{str(url)!r:.200}: host {host!r} does not resolve: {e}") from e
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    refused = next((a for a in addresses if _not_public(a)), None)
    if refused is not None:
        raise InvalidInput(
            f"{str(url)!r:.200}: host {host!r} is a private, loopback, link-local or multicast"
            f" address ({refused}); the setting url_allow_private_hosts allows such hosts"
        )


async def _https_redirects_only(response: httpx.Response) -> None:
    """Refuse a redirect to a scheme other than https (an https URL sent to http, or to a
    plain-http internal service)."""
    if response.has_redirect_location:
        target = response.request.url.join(response.headers["location"])
        if target.scheme != "https":
            raise InvalidInput(
                f"{str(response.request.url)!r:.200} redirects to {str(target)!r:.200}:"
                " redirects are followed to https:// URLs only"
            )


def _client(allow_private: bool) -> httpx.AsyncClient:
    """The http client of URL inputs: bounded redirects, to https only; each request (the
    first and every redirect) refused when its host is not public, unless
    ``allow_private`` (the setting ``url_allow_private_hosts``)."""
    hooks: dict[str, list[Any]] = {"response": [_https_redirects_only]}
    if not allow_private:

        async def check(request: httpx.Request) -> None:
            await _check_public(request.url)

        hooks["request"] = [check]
    return httpx.AsyncClient(
        follow_redirects=True, max_redirects=_MAX_REDIRECTS, timeout=_TIMEOUT, event_hooks=hooks
    )


async def list_url(url: str, *, allow_private: bool = False) -> list[Remote]:
    """The files ``url`` names now: one for a file, every file below it for an fsspec
    folder (relative paths checked: a name with ``..`` or an absolute one is refused).
    ``allow_private``: http(s) hosts with private addresses may be read (see
    :func:`_client`)."""
    scheme = _scheme(url)
    if scheme == "s3":
        raise InvalidInput(f"{url!r:.200} is read through its bucket's datastore")
    if scheme not in _HTTP:
        return await asyncio.to_thread(_fsspec_list, url)
    name = url_file_name(url) or "download"
    async with _client(allow_private) as client:
        try:
            response = await client.head(url)
        except httpx.HTTPError as e:
            raise InvalidInput(f"HEAD {url} failed: {type(e).__name__}: {e}") from e
    if response.status_code == 404:
        raise NotFound(f"GET {url} answered 404 Not Found")
    if response.status_code != 200:  # a server without HEAD: no validator, no cache
        return [Remote(url, name, -1, "")]
    size = int(response.headers.get("content-length") or -1)
    return [Remote(url, name, size, _http_validator(response.headers))]


def _fs(url: str) -> tuple[Any, str]:
    core: Any = importlib.import_module("fsspec.core")
    fs, path = core.url_to_fs(url, **_ANON.get(_scheme(url), {}))
    return fs, str(path)


def _fsspec_list(url: str) -> list[Remote]:
    fs, root = _fs(url)
    if not fs.exists(root):
        raise NotFound(f"nothing at {url!r:.200}")
    if not fs.isdir(root):
        info = fs.info(root)
        name = url_file_name(url) or "download"
        return [Remote(url, name, int(info.get("size") or -1), _info_validator(info))]
    out = []
    base = root.rstrip("/")
    for name, info in sorted(fs.find(root, detail=True).items()):
        rel = name[len(base) :].lstrip("/") if name.startswith(base) else name
        try:
            validate_run_path(rel)
        except InvalidName as e:
            raise InvalidName(f"{url!r:.200}: file {rel!r:.200}: {e}") from e
        full = fs.unstrip_protocol(name)
        out.append(Remote(full, rel, int(info.get("size") or -1), _info_validator(info), True))
    if not out:
        raise NotFound(f"no files under {url!r:.200}")
    return out


async def fetch_remote(
    remote: Remote,
    folder: Path,
    *,
    max_bytes: int = MAX_URL_BYTES,
    check: bool = True,
    allow_private: bool = False,
) -> Path:
    """``remote`` into ``folder/<its path>``; with ``check`` (and a validator), the bytes
    must be the ones it described, else ``DataChanged``."""
    target = local_target(folder, remote.path)  # a name may not climb out
    target.parent.mkdir(parents=True, exist_ok=True)
    if _scheme(remote.url) not in _HTTP:
        await asyncio.to_thread(_fsspec_copy, remote, target, max_bytes, check)
        return target
    async with _client(allow_private) as client:
        try:
            async with client.stream("GET", remote.url) as response:
                if response.status_code != 200:
                    raise (NotFound if response.status_code == 404 else InvalidInput)(
                        f"GET {remote.url} answered {response.status_code} {response.reason_phrase}"
                    )
                now = _http_validator(response.headers)
                if check and remote.validator and not same_bytes(remote.validator, now):
                    raise DataChanged(f"{remote.url} changed ({remote.validator} -> {now})")
                size = int(response.headers.get("content-length") or 0)
                if size > max_bytes:
                    raise InvalidInput(f"{remote.url}: {size} bytes, over the bound of {max_bytes}")
                written = 0
                with target.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        written += len(chunk)
                        if written > max_bytes:
                            raise InvalidInput(f"{remote.url}: over the bound of {max_bytes} bytes")
                        await asyncio.to_thread(out.write, chunk)
        except httpx.HTTPError as e:
            raise InvalidInput(f"GET {remote.url} failed: {type(e).__name__}: {e}") from e
    return target


def _fsspec_copy(remote: Remote, target: Path, max_bytes: int, check: bool) -> None:
    fs, path = _fs(remote.url)
    if check and remote.validator:
        now = _info_validator(fs.info(path))
        if not same_bytes(remote.validator, now):
            raise DataChanged(f"{remote.url} changed ({remote.validator} -> {now})")
    with fs.open(path, "rb") as src, target.open("wb") as out:
        written = 0
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > max_bytes:
                raise InvalidInput(f"{remote.url}: over the bound of {max_bytes} bytes")
            out.write(chunk)


async def download_url(
    url: str, folder: Path, *, max_bytes: int = MAX_URL_BYTES, allow_private: bool = False
) -> Path:
    """The file at ``url`` into ``folder`` under its own name (the path written); a folder
    URL's files under their relative paths (``folder`` returned)."""
    remotes = await list_url(url, allow_private=allow_private)
    for remote in remotes:
        got = await fetch_remote(
            remote, folder, max_bytes=max_bytes, check=False, allow_private=allow_private
        )
    return folder if remotes[0].in_folder else got
