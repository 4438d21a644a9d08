"""Job inputs read from URLs: checked at submit, downloaded by the agent.

``http://`` and ``https://`` URLs name one file each, fetched with httpx (bounded size,
timeout and redirects). The file keeps the last segment of the URL's path as its name,
sanitised (no separators, no ``..``); ``Content-Disposition`` is not read. A URL with
credentials in it is refused: they would be stored with the job. ``s3://`` URLs go through a
registered datastore (``Datastore.register_s3``). Other schemes (``wasbs://``,
``abfss://``, ``gs://``, ...) are read through fsspec when it and the scheme's driver are
installed, and refused at submit otherwise, naming the package to install.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from cairn.errors import InvalidInput

__all__ = ["MAX_URL_BYTES", "check_url", "download_url", "is_url", "url_file_name"]

#: the most bytes one URL input may download
MAX_URL_BYTES = 64 * 2**30
_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_MAX_REDIRECTS = 5
_HTTP = ("http", "https")
#: fsspec schemes and the package that drives each
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
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) other than a datastore or dataset URI."""
    m = _SCHEME.match(path)
    return m is not None and m.group(1).lower() not in ("azureml", "cairn")


def _missing(scheme: str) -> list[str]:
    need = ["fsspec", _DRIVERS.get(scheme, "")]
    return [p for p in need if p and importlib.util.find_spec(p) is None]


def check_url(url: str, where: str) -> str:
    """``url`` if a job may read it; otherwise ``InvalidInput`` saying why (``where`` names
    the input)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    # (``wasbs://container@account...`` names a container, not a user)
    if parts.password is not None or (scheme in _HTTP and parts.username is not None):
        raise InvalidInput(
            f"{where}: the URL carries credentials (user:password@); they would be stored"
            " with the job: register a datastore with them, or use a URL that needs none"
        )
    if not parts.hostname:
        raise InvalidInput(f"{where}: {url!r:.200} names no host")
    if scheme == "s3":
        raise InvalidInput(
            f"{where}: an s3:// URL is read through a datastore: register the bucket with"
            " Datastore.register_s3 and use azureml://datastores/<name>/paths/<path>"
        )
    if scheme in _HTTP:
        if url_file_name(url) is None:
            raise InvalidInput(
                f"{where}: {url!r:.200} names a folder; an http(s) URL names one file"
                " (a folder has no listing over http): use a datastore for folders"
            )
        return url
    if missing := _missing(scheme):
        raise InvalidInput(
            f"{where}: {scheme}:// URLs need {' and '.join(missing)} installed"
            f" (pip install {' '.join(missing)})"
        )
    return url


def url_file_name(url: str) -> str | None:
    """The last segment of the URL's path, made a safe file name; None for a folder."""
    segment = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\\/]", "_", segment).strip()
    if name in ("", ".", ".."):
        return None
    return name[:200]


async def download_url(url: str, folder: Path, *, max_bytes: int = MAX_URL_BYTES) -> Path:
    """Download ``url`` into ``folder`` under its own file name; the path written."""
    name = url_file_name(url) or "download"
    target = folder / name
    if target.parent != folder or name in (".", ".."):  # by construction; checked
        raise InvalidInput(f"{url!r:.200}: file name {name!r} leaves the input folder")
    if urlsplit(url).scheme.lower() not in _HTTP:
        await asyncio.to_thread(_fsspec_copy, url, target, max_bytes)
        return target
    async with httpx.AsyncClient(
        follow_redirects=True, max_redirects=_MAX_REDIRECTS, timeout=_TIMEOUT
    ) as client:
        try:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InvalidInput(
                        f"GET {url} answered {response.status_code} {response.reason_phrase}"
                    )
                size = int(response.headers.get("content-length") or 0)
                if size > max_bytes:
                    raise InvalidInput(f"{url}: {size} bytes, over the bound of {max_bytes}")
                written = 0
                with target.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        written += len(chunk)
                        if written > max_bytes:
                            raise InvalidInput(f"{url}: over the bound of {max_bytes} bytes")
                        await asyncio.to_thread(out.write, chunk)
        except httpx.HTTPError as e:
            raise InvalidInput(f"GET {url} failed: {type(e).__name__}: {e}") from e
    return target


def _fsspec_copy(url: str, target: Path, max_bytes: int) -> None:
    fsspec: Any = importlib.import_module("fsspec")
    with fsspec.open(url, "rb") as src, target.open("wb") as out:
        written = 0
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > max_bytes:
                raise InvalidInput(f"{url}: over the bound of {max_bytes} bytes")
            out.write(chunk)
