"""TLS for the distributed profile: a CA, a server certificate and client certificates, and the
pieces that use them (the nats-server ``tls { }`` block, the clients' ``ssl.SSLContext``).

``make_certs(folder, hosts=..., clients=...)`` writes into ``folder``::

    ca.pem, ca-key.pem                  the CA (made once, reused by every later call)
    server.pem, server-key.pem          nats-server's certificate; its SANs are the hosts
    client-<name>.pem, -<name>-key.pem  one per client (CN = the name), for mutual TLS

Keys are ECDSA P-256: nats-server (Go's ``crypto/tls``) and Python's ``ssl`` (OpenSSL) both
accept it in TLS 1.2 and 1.3, and so does every NATS client library, whereas Ed25519
certificates are not accepted by all of them; P-256 keys are small and fast to sign with,
and 128-bit secure like RSA-3072. Private keys are written 0600 and a certificate or key that
exists is never replaced silently: ``force=True`` replaces the server's and the clients'
(never the CA, which every client trusts: delete the folder to start again).

Not done: no rotation, no revocation (a leaked client key stays valid until it expires: make
a new CA and new certificates), no TLS between cluster routes (docs/security.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cairn.errors import InvalidInput

__all__ = [
    "DEFAULT_HOSTS",
    "MAX_DAYS",
    "CertFiles",
    "client_context",
    "ensure_certs",
    "make_certs",
    "server_tls_block",
]

#: the server certificate's names when none are given: this machine, by name and by address
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
#: a certificate's longest life: ten years (the CA's own life)
MAX_DAYS = 3650
CA_DAYS = MAX_DAYS
DEFAULT_DAYS = 365
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOST = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")


@dataclass(frozen=True)
class CertFiles:
    """What ``make_certs`` left in its folder, and what it made this time."""

    folder: Path
    clients: tuple[str, ...] = ()
    made: tuple[Path, ...] = field(default=())
    reused: tuple[Path, ...] = field(default=())

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server-key.pem"

    def client_cert(self, name: str) -> Path:
        return self.folder / f"client-{name}.pem"

    def client_key(self, name: str) -> Path:
        return self.folder / f"client-{name}-key.pem"


def make_certs(
    folder: Path,
    *,
    hosts: Sequence[str] = (),
    clients: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    force: bool = False,
    server: bool = True,
) -> CertFiles:
    """Make (or reuse) the CA in ``folder``, then a server certificate for ``hosts`` (default
    ``DEFAULT_HOSTS``; IP addresses become IP SANs) and a client certificate per name in
    ``clients``, each valid ``days`` (at most ``MAX_DAYS``, never past the CA). A server or
    client file that exists is an ``InvalidInput`` naming it, unless ``force``."""
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"days must be between 1 and {MAX_DAYS}, not {days}")
    names = _check_hosts(hosts or DEFAULT_HOSTS)
    for name in clients:
        if not _CLIENT_NAME.fullmatch(name):
            raise InvalidInput(
                f"client name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
            )
    if len(set(clients)) != len(clients):
        raise InvalidInput(f"a client name is given twice: {list(clients)}")
    files = CertFiles(folder=folder, clients=tuple(clients))
    wanted = [(files.server_cert, files.server_key)] if server else []
    wanted += [(files.client_cert(c), files.client_key(c)) for c in clients]
    existing = [p for pair in wanted for p in pair if p.exists()]
    if existing and not force:
        raise InvalidInput(
            f"{existing[0]} exists: it is not replaced without --force (which replaces the"
            " server's and the named clients' certificates and keys; the CA is always kept)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    made: list[Path] = []
    reused: list[Path] = []
    ca_cert, ca_key = _load_ca(files)
    if ca_cert is None or ca_key is None:
        ca_cert, ca_key = _new_ca()
        _write_key(files.ca_key, ca_key)
        _write_cert(files.ca, ca_cert)
        made += [files.ca, files.ca_key]
    else:
        reused += [files.ca, files.ca_key]
    if server:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf(ca_cert, ca_key, key, "cairn nats-server", names, days, server=True)
        _write_key(files.server_key, key)
        _write_cert(files.server_cert, cert)
        made += [files.server_cert, files.server_key]
    for client in clients:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf(ca_cert, ca_key, key, client, [], days, server=False)
        _write_key(files.client_key(client), key)
        _write_cert(files.client_cert(client), cert)
        made += [files.client_cert(client), files.client_key(client)]
    return CertFiles(folder, tuple(clients), tuple(made), tuple(reused))


def ensure_certs(folder: Path, *, clients: Sequence[str] = ()) -> CertFiles:
    """What ``cairn up --tls`` needs in ``folder``: the CA and the server's certificate (for
    ``DEFAULT_HOSTS``) and a certificate per name of ``clients``, made where missing and
    reused where present (a second start serves the certificates its clients trust)."""
    files = CertFiles(folder, tuple(clients))
    has_server = files.server_cert.exists() and files.server_key.exists()
    missing = [
        c for c in clients if not (files.client_cert(c).exists() and files.client_key(c).exists())
    ]
    if has_server and not missing and files.ca.exists():
        return files
    made = make_certs(folder, clients=missing, server=not has_server)
    return CertFiles(folder, tuple(clients), made.made, made.reused)


def server_tls_block(
    cert: Path, key: Path, ca: Path, *, verify: bool = False, timeout_s: float = 2.0
) -> list[str]:
    """The nats-server ``tls { }`` block: the server presents ``cert``; with ``verify`` every
    client must present a certificate signed by ``ca`` (mutual TLS) or is refused."""
    return [
        "tls {",
        f"  cert_file: {_quoted(cert)}",
        f"  key_file: {_quoted(key)}",
        f"  ca_file: {_quoted(ca)}",
        f"  verify: {'true' if verify else 'false'}",
        f"  timeout: {timeout_s:g}",
        "}",
    ]


def client_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """A client's context: verify the server (and its name) against ``ca``, or against the
    system's store when ``ca`` is None; present ``cert`` (with ``key``) when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def _quoted(path: Path) -> str:
    text = str(path)
    if '"' in text or "\\" in text or "\n" in text:
        raise InvalidInput(
            f"a TLS file's path may not hold quotes, backslashes or newlines: {text!r}"
        )
    return f'"{text}"'


def _check_hosts(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _HOST.fullmatch(host) or len(host) > 253:
            raise InvalidInput(f"host {host!r} is neither a DNS name nor an IP address")
        names.append(x509.DNSName(host.lower()))
    if len(set(names)) != len(names):
        raise InvalidInput(f"a host is given twice: {list(hosts)}")
    return names


def _load_ca(files: CertFiles) -> tuple[x509.Certificate | None, ec.EllipticCurvePrivateKey | None]:
    has_cert, has_key = files.ca.exists(), files.ca_key.exists()
    if not has_cert and not has_key:
        return None, None
    if has_cert != has_key:
        there, missing = (files.ca, files.ca_key) if has_cert else (files.ca_key, files.ca)
        raise InvalidInput(
            f"{there} exists without {missing}: restore it, or delete {files.folder} to make a"
            " new CA (every certificate it signed must then be made again)"
        )
    try:
        cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot read the CA in {files.folder}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{files.ca_key} is not an ECDSA key")
    if cert.public_key() != key.public_key():
        raise InvalidInput(f"{files.ca_key} is not the key of {files.ca}")
    if cert.not_valid_after_utc <= _now():
        raise InvalidInput(
            f"the CA {files.ca} expired on {cert.not_valid_after_utc:%Y-%m-%d}: delete"
            f" {files.folder} to make a new one (and every certificate again)"
        )
    return cert, key


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cairn CA")])
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: list[x509.GeneralName],
    days: int,
    *,
    server: bool,
) -> x509.Certificate:
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    # a server's certificate is also the client certificate a cluster node presents when it
    # dials a route to another (nats-server requires mutual TLS between routes)
    usage = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if server
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, data, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically (a file beside it, then rename), created with ``mode`` from the start, so a
    key is never readable by others, not even for a moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
