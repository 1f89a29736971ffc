"""etcd 3.4 as a peer of the cluster benchmark (:mod:`benchmarks.bench_cluster`).

etcd (``apt-get install etcd-server``): 3 members on loopback with their defaults (fsync on),
each with a fresh data dir. A separate client process (as raftpy's) writes 100-byte values
cycling over 4,096 keys (``key00000``...), to the leader, 1 and then 256 in flight:

- ``etcd_*``: through etcd's native gRPC API, as its own Go client does: ``KV/Put`` with the
  ``grpcio`` package (the optional ``bench`` extra: ``pip install -e '.[bench]'``) on
  ``grpc.aio``, every request a stream of one HTTP/2 connection (one channel, as etcd's
  clientv3 keeps; ``RAFTPY_BENCH_ETCD_CHANNELS=N`` spreads the requests over N). No
  ``.proto`` file or generated stub: the method is called by its path with bytes that
  :func:`put_request` encodes (protobuf's wire format, two length-delimited fields). These
  are the figures the
  cluster benchmark's ``ratio_*_vs_etcd`` results divide by. Without ``grpcio`` they are
  skipped with a note;
- ``etcd_http_*``: the same writes through the v3 HTTP/JSON gateway (``POST /v3/kv/put``,
  base64 key and value; one keep-alive HTTP/1.1 connection per request in flight). The
  gateway translates each request to gRPC inside etcd, so it is slower: kept for comparison,
  never used in a ratio.

Without etcd the suite prints a note and reports nothing. The client process: ``python -m
benchmarks.peer_etcd load grpc|http <inflight> <seconds> <host:port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.loadgen import (
    KEYS,
    VALUE_BYTES,
    WARMUP,
    Measure,
    _CpuMeter,
    _drive,
    _kill_all,
    _line,
    _report,
    _run_load,
    _run_loop,
    _wait_listening,
)
from benchmarks.machine import free_ports, load_text

MODULE = "benchmarks.peer_etcd"
PUT_METHOD = "/etcdserverpb.KV/Put"


# -- protobuf's wire format, the little of it a PutRequest needs -------------------------------


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf base-128 varint: 7 bits a byte, low first, high bit = more."""
    if n < 0:
        raise ValueError(f"varint of a negative number: {n}")
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(field: int, data: bytes) -> bytes:
    """Field ``field`` holding ``data`` (wire type 2: key, length, bytes)."""
    return varint(field << 3 | 2) + varint(len(data)) + data


def put_request(key: bytes, value: bytes) -> bytes:
    """etcd's ``etcdserverpb.PutRequest`` with ``key`` (field 1) and ``value`` (field 2), every
    other field at its default (lease 0, no prev_kv)."""
    return length_delimited(1, key) + length_delimited(2, value)


def grpc_missing() -> bool:
    """Whether ``grpcio`` (the ``bench`` extra) is absent."""
    return importlib.util.find_spec("grpc") is None


class _HttpConnection:
    """A minimal HTTP/1.1 keep-alive connection for the etcd gateway (one request at a time)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            data = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self._reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(p[:-2] for p in parts)
        else:
            raise RuntimeError(f"unframed HTTP response: {lines[0]}")
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        return data

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _etcd_bodies() -> list[bytes]:
    value = base64.b64encode(b"v" * VALUE_BYTES).decode()
    return [
        json.dumps({"key": base64.b64encode(f"key{k:05d}".encode()).decode(), "value": value})
        .encode()
        .replace(b" ", b"")
        for k in range(KEYS)
    ]


async def _http_load(inflight: int, seconds: float, address: str) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    conns = [_HttpConnection(host, int(port)) for _ in range(inflight)]
    bodies = _etcd_bodies()

    async def issue(w: int, k: int) -> None:
        await conns[w].post("/v3/kv/put", bodies[k % KEYS])

    try:
        return await _drive(issue, inflight, seconds, WARMUP)
    finally:
        for conn in conns:
            conn.close()


async def _grpc_load(inflight: int, seconds: float, address: str) -> dict[str, Any]:
    import grpc

    requests = [put_request(f"key{k:05d}".encode(), b"v" * VALUE_BYTES) for k in range(KEYS)]
    # One channel (one HTTP/2 connection, a stream per request), as etcd's clientv3 uses.
    # Serializers None: the requests are bytes already and the replies stay bytes.
    n = int(os.environ.get("RAFTPY_BENCH_ETCD_CHANNELS", "1"))
    channels = [grpc.aio.insecure_channel(address) for _ in range(n)]
    puts = [
        c.unary_unary(PUT_METHOD, request_serializer=None, response_deserializer=None)
        for c in channels
    ]
    try:
        for put in puts:
            await put(requests[0], timeout=10.0)  # connect before the clock runs

        async def issue(w: int, k: int) -> None:
            await puts[w % n](requests[k % KEYS], timeout=10.0)

        return await _drive(issue, inflight, seconds, WARMUP)
    finally:
        for c in channels:
            await c.close()


async def _load_client(transport: str, inflight: int, seconds: float, address: str) -> None:
    load = _grpc_load if transport == "grpc" else _http_load
    result = await load(inflight, seconds, address)
    result["loop"] = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print("result " + json.dumps(result), flush=True)


FIGURES = {1: "single", 256: "inflight256"}  # in flight -> the results' name


@contextlib.asynccontextmanager
async def etcd_cluster(root: Path) -> AsyncIterator[Measure | None]:
    """Three etcd members, up, with a leader; yields ``measure(inflight, seconds, out)``,
    which adds ``etcd_<figure>_*`` (gRPC, when ``grpcio`` is installed) and
    ``etcd_http_<figure>_*`` to ``out`` (or ``None``, with a note, without etcd). Every
    member is killed after."""
    exe = shutil.which("etcd")
    if exe is None:
        print("etcd: not installed (apt-get install etcd-server); skipped", flush=True)
        yield None
        return
    ports = free_ports(6)
    client_ports, peer_ports = ports[:3], ports[3:]
    initial = ",".join(f"n{i}=http://127.0.0.1:{peer_ports[i]}" for i in range(3))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(3):
            log = open(root / f"etcd{i}.log", "ab")  # noqa: SIM115 - the child owns it
            try:
                procs.append(
                    subprocess.Popen(
                        [
                            exe,
                            "--name",
                            f"n{i}",
                            "--data-dir",
                            str(root / f"etcd{i}"),
                            "--listen-client-urls",
                            f"http://127.0.0.1:{client_ports[i]}",
                            "--advertise-client-urls",
                            f"http://127.0.0.1:{client_ports[i]}",
                            "--listen-peer-urls",
                            f"http://127.0.0.1:{peer_ports[i]}",
                            "--initial-advertise-peer-urls",
                            f"http://127.0.0.1:{peer_ports[i]}",
                            "--initial-cluster",
                            initial,
                            "--initial-cluster-state",
                            "new",
                            "--initial-cluster-token",
                            "raftpy-bench",
                            "--log-level",
                            "error",
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            finally:
                log.close()
        for i in range(3):
            _wait_listening(client_ports[i], procs[i], f"etcd {i}", 15)
        leader_port = await _etcd_leader(client_ports, 30.0)
        pids = {
            f"etcd{i}{'*' if client_ports[i] == leader_port else ''}": p.pid
            for i, p in enumerate(procs)
        }
        print(f"etcd: 3 members up (* the leader); {load_text()}", flush=True)
        address = f"127.0.0.1:{leader_port}"
        transports = ["http"]
        if grpc_missing():
            print(
                "  etcd gRPC: grpcio not installed (pip install -e '.[bench]'): no etcd_* "
                "figures, so no ratio against etcd",
                flush=True,
            )
        else:
            transports.insert(0, "grpc")

        async def measure(inflight: int, seconds: float, out: dict[str, float]) -> None:
            for transport in transports:
                meter = _CpuMeter(pids)
                load = load_text()
                args = ["load", transport, str(inflight), str(seconds), address]
                result = await _run_load(args, seconds + 60, meter, module=MODULE)
                title = f"etcd {transport}, {inflight} in flight on {result['loop']}"
                print(_line(title, result, load), flush=True)
                print("    " + meter.describe(result["client_cpu"]), flush=True)
                prefix = "etcd" if transport == "grpc" else "etcd_http"
                out.update(_report(f"{prefix}_{FIGURES[inflight]}", result))

        yield measure
    finally:
        _kill_all(procs)


async def etcd_suite(root: Path, out: dict[str, float], seconds: float) -> None:
    """Start etcd, measure 1 and 256 in flight into ``out``, stop it."""
    async with etcd_cluster(root) as measure:
        if measure is not None:
            for inflight in FIGURES:
                await measure(inflight, seconds, out)


async def _etcd_leader(ports: list[int], timeout: float) -> int:
    """The client port of the etcd leader (via ``/v3/maintenance/status``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for port in ports:
            conn = _HttpConnection("127.0.0.1", port)
            try:
                st = json.loads(
                    await asyncio.wait_for(conn.post("/v3/maintenance/status", b"{}"), 2)
                )
                if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return port
            except (OSError, RuntimeError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                conn.close()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"etcd elected no leader within {timeout} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    sub = parser.add_subparsers(dest="mode", required=True)
    p_load = sub.add_parser("load", help="(internal) a load client process")
    p_load.add_argument("transport", choices=["grpc", "http"])
    p_load.add_argument("inflight", type=int)
    p_load.add_argument("seconds", type=float)
    p_load.add_argument("address")
    args = parser.parse_args(argv)
    _run_loop(_load_client(args.transport, args.inflight, args.seconds, args.address))
    return 0


if __name__ == "__main__":
    sys.exit(main())
