"""Mutual TLS for every raftpy connection: :class:`TlsConfig` (the certificate files), the
``ssl`` contexts it builds, and the identity rules that say who a verified certificate is.

Both ends of every connection present a certificate and verify the other's (TLS 1.3 at least,
``CERT_REQUIRED`` both ways), so nobody without a certificate of the cluster's CA gets as far as
the raftpy handshake. What a certificate may then do depends on what it names:

- **A node certificate** names its node id in a URI subject alternative name,
  ``raftpy://node/<id>`` (exactly one such name; ``<id>`` in decimal), and must be issued by the
  cluster CA (``ca``). Its common name is ``raftpy-node-<id>``, for people reading it; only the
  URI counts. A node certificate may connect as that node, and as a client. "Issued by" means
  directly: with an intermediate CA, the intermediate belongs in ``ca``.
- **A client certificate** is any other certificate verified against ``ca`` or ``client_ca``
  (``raftpy tls init`` writes ``raftpy://client/<name>`` and CN ``<name>``). It may send client
  requests (including ``status``), never peer messages: a peer handshake is accepted only from
  a node certificate naming the node id the handshake claims.

Why the node id and not the host name: a node is known to its peers by id, and its address may
change (a move, a container, a membership change) without a new certificate. A dialer knows
which node it meant to reach, so it checks that the acceptor's certificate names that node id;
the acceptor checks that a dialing peer's certificate names the id its ``Hello`` claims. The
host names and addresses a certificate may also carry (``raftpy tls init --hosts``) are for
other tools; raftpy does not check them (``check_hostname`` is off, the id check replaces it).

A separate ``client_ca`` may issue client certificates (for example one per application team).
It never issues node certificates: a node certificate must be issued by a CA of ``ca``, compared
by the issuer's subject name, so the client CA's subject must differ from every cluster CA's
(checked when the contexts are built). Certificate rotation: ``ca`` may be a bundle of several
CA certificates (old and new); see README.md, "Security".
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from typing import Any, Final, cast

NODE_URI_PREFIX: Final = "raftpy://node/"
"""The URI subject alternative name of a node certificate: this prefix and the node id."""
CLIENT_URI_PREFIX: Final = "raftpy://client/"
"""The URI subject alternative name ``raftpy tls init`` gives a client certificate."""

StrPath = str | os.PathLike[str]

# What ssl's getpeercert() and get_ca_certs() give for a distinguished name.
DistinguishedName = tuple[tuple[tuple[str, str], ...], ...]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The certificate files of one node or client (PEM paths).

    - ``cert`` / ``key``: this end's certificate (with any intermediates after it) and its key;
      a node's names its node id (see the module docstring), a client's is any certificate of
      the cluster CA or of ``client_ca``.
    - ``ca``: the cluster CA certificate(s), which issued every node certificate: the other
      end's certificate is verified against them. May hold several (old and new, to rotate).
    - ``client_ca``: servers only: another CA whose certificates are accepted from clients
      (never from peers). ``None``: clients hold certificates of ``ca``.
    """

    cert: StrPath
    key: StrPath
    ca: StrPath
    client_ca: StrPath | None = None

    def load(self) -> TlsContexts:
        """Read the files and build the contexts; ``ValueError`` naming the file at fault."""
        return TlsContexts(self)


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who a verified certificate is: ``node_id`` for a node certificate of the cluster CA,
    else ``None`` (a client). ``name`` is the subject's common name, for logs."""

    node_id: int | None
    name: str


class TlsContexts:
    """The ``ssl`` contexts of a :class:`TlsConfig`: ``server`` for accepted connections,
    ``client`` for dialed ones (peers and clients alike), and the identity rules."""

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self.node_issuers = _subjects(config.ca, "ca")
        if config.client_ca is not None:
            shared = self.node_issuers & _subjects(config.client_ca, "client_ca")
            if shared:
                raise ValueError(
                    f"TLS: client_ca {os.fspath(config.client_ca)!r} has the same subject as a "
                    f"CA of ca {os.fspath(config.ca)!r}: its certificates could pass for node "
                    "certificates. Give the client CA another name."
                )
        self.server = self._context(ssl.PROTOCOL_TLS_SERVER)
        self._trust(self.server, config.ca, "ca")
        if config.client_ca is not None:
            self._trust(self.server, config.client_ca, "client_ca")
        self.client = self._context(ssl.PROTOCOL_TLS_CLIENT)
        # The other end's identity is its node id, checked after the handshake (see the
        # module docstring), not a host name.
        self.client.check_hostname = False
        self._trust(self.client, config.ca, "ca")

    def _context(self, protocol: ssl._SSLMethod) -> ssl.SSLContext:
        ctx = ssl.SSLContext(protocol)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        cert, key = os.fspath(self.config.cert), os.fspath(self.config.key)
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"TLS: cannot load certificate {cert!r} with key {key!r}: {exc}"
            ) from None
        return ctx

    @staticmethod
    def _trust(ctx: ssl.SSLContext, path: StrPath, what: str) -> None:
        try:
            ctx.load_verify_locations(cafile=os.fspath(path))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS: cannot load {what} {os.fspath(path)!r}: {exc}") from None

    def identity(self, peercert: Any) -> PeerIdentity | None:
        """Who the verified certificate ``peercert`` (``getpeercert()``'s dict) is; ``None``
        when there is none (a connection without TLS)."""
        if not isinstance(peercert, dict) or not peercert:
            return None
        return identity_of(peercert, self.node_issuers)


def identity_of(
    peercert: dict[str, Any], node_issuers: frozenset[DistinguishedName]
) -> PeerIdentity:
    """The identity rules of the module docstring, applied to a verified certificate."""
    name = _common_name(peercert.get("subject", ()))
    uris = [v for k, v in peercert.get("subjectAltName", ()) if k == "URI"]
    node_uris = [u for u in uris if isinstance(u, str) and u.startswith(NODE_URI_PREFIX)]
    if len(node_uris) != 1 or peercert.get("issuer") not in node_issuers:
        return PeerIdentity(None, name)
    digits = node_uris[0][len(NODE_URI_PREFIX) :]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        return PeerIdentity(None, name)
    return PeerIdentity(int(digits), name)


def _common_name(subject: Any) -> str:
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "?"


def _subjects(path: StrPath, what: str) -> frozenset[DistinguishedName]:
    """The subject names of the CA certificates in ``path``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    TlsContexts._trust(ctx, path, what)
    subjects: frozenset[DistinguishedName] = frozenset(
        cast(DistinguishedName, cert["subject"]) for cert in ctx.get_ca_certs()
    )
    if not subjects:
        raise ValueError(f"TLS: {what} {os.fspath(path)!r} holds no CA certificate")
    return subjects


def tls_from_files(
    cert: StrPath | None, key: StrPath | None, ca: StrPath | None, client_ca: StrPath | None = None
) -> TlsConfig | None:
    """A :class:`TlsConfig` from the command lines' ``--tls-cert``, ``--tls-key``, ``--tls-ca``
    and ``--tls-client-ca`` (``None`` when none is given), with its files read once.
    ``ValueError`` for an incomplete set (a certificate without its key, ...) or a file that
    cannot be read."""
    given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
    if all(value is None for value in given.values()):
        if client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert, --tls-key and --tls-ca")
        return None
    missing = [option for option, value in given.items() if value is None]
    if cert is None or key is None or ca is None:
        raise ValueError(
            f"TLS needs --tls-cert, --tls-key and --tls-ca (missing {', '.join(missing)})"
        )
    config = TlsConfig(cert, key, ca, client_ca)
    config.load()
    return config


def is_loopback(host: str) -> bool:
    """Whether a listening ``host`` is reachable from this machine only (a loopback address,
    or ``localhost``). Any other name counts as reachable from outside."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
