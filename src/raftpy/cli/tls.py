"""``raftpy tls init DIR --nodes 1,2,3 [--clients NAME,...] [--hosts H,...]``: write a CA and
certificates for a local or test cluster.

Files written in ``DIR`` (keys are created owner-only, 0600; ``DIR`` itself 0700 when created):

- ``ca.pem`` / ``ca-key.pem``: the cluster CA (ECDSA P-256, self-signed, 10 years). When they
  exist already they are reused, so the same command adds members or clients later;
- ``node-<id>.pem`` / ``node-<id>-key.pem`` per node: URI SAN ``raftpy://node/<id>``, CN
  ``raftpy-node-<id>``, server and client use (nodes dial each other), plus the ``--hosts``
  names and addresses (``localhost``, ``127.0.0.1`` and ``::1`` by default) for other tools;
- ``client-<name>.pem`` / ``client-<name>-key.pem`` per client: URI SAN
  ``raftpy://client/<name>``, CN ``<name>``, client use only.

An existing certificate or key file is never overwritten (exit 1, naming it). The identity
rules these files follow are in :mod:`raftpy.transport.tls`. The CA key is the key to the whole
cluster: for production, keep it offline or use your own PKI with the same rules.

Needs the ``cryptography`` package (``pip install 'raftpy[tls]'``). Exit status: 0 written,
1 could not write (a file exists, ``cryptography`` missing, an OS error), 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from raftpy.cli.arguments import EXIT_USAGE
from raftpy.transport.tls import CLIENT_URI_PREFIX, NODE_URI_PREFIX

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

EXIT_TLS_OK: Final = 0
EXIT_TLS_FAILED: Final = 1

CA_DAYS: Final = 3650
DEFAULT_DAYS: Final = 825
DEFAULT_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
MISSING_CRYPTOGRAPHY: Final = (
    "raftpy tls init needs the 'cryptography' package: pip install 'raftpy[tls]'"
)


class Issuer:
    """A CA that signs certificates: its certificate and private key."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str | None = None, days: int = CA_DAYS) -> Issuer:
    """A new self-signed CA. Its default name is unique (``raftpy cluster CA <random>``): two
    CAs in one bundle (a rotation), or a client CA beside the cluster's, must not share one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    if common_name is None:
        common_name = f"raftpy cluster CA {secrets.token_hex(4)}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(cert, key)


def issue(
    issuer: Issuer,
    common_name: str,
    uri: str,
    *,
    server: bool,
    hosts: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    not_before: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by ``issuer`` naming ``uri`` (and ``hosts``); ``server`` adds the
    server use (node certificates; clients get the client use only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before if not_before is not None else _now() - datetime.timedelta(minutes=5)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    uses = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        uses.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(uses), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return cert, key


def node_certificate(
    issuer: Issuer, node_id: int, hosts: Sequence[str] = DEFAULT_HOSTS, days: int = DEFAULT_DAYS
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Node ``node_id``'s certificate (the encoding is :mod:`raftpy.transport.tls`'s)."""
    return issue(
        issuer,
        f"raftpy-node-{node_id}",
        f"{NODE_URI_PREFIX}{node_id}",
        server=True,
        hosts=hosts,
        days=days,
    )


def client_certificate(
    issuer: Issuer, name: str, days: int = DEFAULT_DAYS
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate for ``name``: client use only, no node id."""
    return issue(issuer, name, f"{CLIENT_URI_PREFIX}{name}", server=False, days=days)


def cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never a moment world-readable);
    ``FileExistsError`` if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # the umask may have taken bits away; never adds any beyond mode


def load_or_make_ca(directory: Path) -> tuple[Issuer, bool]:
    """The CA of ``directory`` (``True``: made now, written)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if cert_path.exists() or key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not the ECDSA key raftpy tls init writes")
        return Issuer(cert, key), False
    ca = make_ca()
    write_new(key_path, key_pem(ca.key), 0o600)
    write_new(cert_path, cert_pem(ca.cert), 0o644)
    return ca, True


def _ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"node ids must be integers: {text!r}") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"need distinct node ids >= 0: {text!r}")
    return ids


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise argparse.ArgumentTypeError(f"client names are letters, digits, - _ .: {name!r}")
    return names


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tls = subparsers.add_parser("tls", help="make certificates for mutual TLS")
    sub = tls.add_subparsers(dest="tls_command", metavar="SUBCOMMAND", required=True)
    init = sub.add_parser(
        "init",
        help="write a CA and node/client certificates for local use",
        description=(
            "Write a CA (reused when DIR already has one) and a certificate per node and "
            "client into DIR. Keys are 0600. Existing files are never overwritten. "
            "See README.md, Security."
        ),
    )
    init.add_argument("dir", metavar="DIR", type=Path)
    init.add_argument("--nodes", type=_ids, default=[], help="node ids, e.g. 1,2,3")
    init.add_argument("--clients", type=_names, default=[], help="client names, e.g. app,admin")
    init.add_argument(
        "--hosts",
        type=lambda t: [h.strip() for h in t.split(",") if h.strip()],
        default=list(DEFAULT_HOSTS),
        help="DNS names / IPs added to node certificates, for other tools (raftpy checks the "
        "node id, not these); default localhost,127.0.0.1,::1",
    )
    init.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity of new certificates")
    init.set_defaults(handler=run_init)


def run_init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.nodes and not args.clients:
        print("error: tls init needs --nodes and/or --clients", file=err)
        return EXIT_USAGE
    if args.days < 1:
        print(f"error: --days must be >= 1, got {args.days}", file=err)
        return EXIT_USAGE
    try:
        import cryptography  # noqa: F401
    except ImportError:
        print(f"error: {MISSING_CRYPTOGRAPHY}", file=err)
        return EXIT_TLS_FAILED
    directory: Path = args.dir
    stems = [f"node-{i}" for i in args.nodes] + [f"client-{n}" for n in args.clients]
    planned = [directory / f"{stem}{suffix}" for stem in stems for suffix in (".pem", "-key.pem")]
    existing = [str(p) for p in planned if p.exists()]
    if existing:
        print(f"error: refusing to overwrite {', '.join(existing)}", file=err)
        return EXIT_TLS_FAILED
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca, made = load_or_make_ca(directory)
        print(f"{'wrote' if made else 'using'} CA {directory / 'ca.pem'}", file=out)
        for node_id in args.nodes:
            cert, key = node_certificate(ca, node_id, args.hosts, args.days)
            _write_pair(directory, f"node-{node_id}", cert, key, out)
        for name in args.clients:
            cert, key = client_certificate(ca, name, args.days)
            _write_pair(directory, f"client-{name}", cert, key, out)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_TLS_FAILED
    return EXIT_TLS_OK


def _write_pair(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, out: TextIO
) -> None:
    write_new(directory / f"{stem}-key.pem", key_pem(key), 0o600)
    write_new(directory / f"{stem}.pem", cert_pem(cert), 0o644)
    print(f"wrote {directory / f'{stem}.pem'} and {stem}-key.pem", file=out)
