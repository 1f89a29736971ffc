"""Node addresses: the one place that parses and formats ``host:port``, and finds free ports.

Every layer that takes an address from a user (the transport's listen and peer addresses, the
client's node list, the command lines) parses it here, so one address is either valid
everywhere or refused everywhere with the same reason.
"""

from __future__ import annotations

import random
import socket

__all__ = ["format_address", "free_port", "free_ports", "parse_address"]


def parse_address(address: str, *, listen: bool = False) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[::1]:8080"`` for IPv6) into ``(host, port)``.

    Port 0 ("any free port") is accepted only for an address to ``listen`` on: nothing can
    connect to it. Raises ``ValueError`` naming the address and what is wrong with it.
    """
    if not isinstance(address, str):
        raise ValueError(f"address must be a 'host:port' string, got {address!r}")
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address!r} is not of the form host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError(f"address {address!r} has an empty host")
    elif not host:
        raise ValueError(f"address {address!r} has no host (use 0.0.0.0 for every interface)")
    elif ":" in host:
        raise ValueError(f"address {address!r}: write an IPv6 host in brackets, as [::1]:8080")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"address {address!r} has a port that is not a number: {port_text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"address {address!r} has a port out of range (1-65535)")
    if port == 0 and not listen:
        raise ValueError(f"address {address!r} has port 0, which nothing can connect to")
    return host, port


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`: brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """A TCP port on ``host`` that is free now, for tests, demos and benchmarks.

    Chosen below the kernel's ephemeral range, so that no outgoing connection can take it
    while a killed server waits to be restarted on it. Falls back to a kernel-chosen port if
    none is found quickly.
    """
    pick = rng if rng is not None else random.Random()
    low, _ = _ephemeral_range()
    floor = 20000 if low > 21000 else 1024
    for _ in range(200):
        port = pick.randrange(floor, low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1", rng: random.Random | None = None) -> list[int]:
    """``n`` distinct ports from :func:`free_port`."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port(host, rng)
        if port not in ports:
            ports.append(port)
    return ports
