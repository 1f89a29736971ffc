"""etcd 3.4 as a peer of the cluster benchmark (:mod:`benchmarks.bench_cluster`).

``etcd_*``: etcd (``apt-get install etcd-server``), 3 members on loopback with their defaults
(fsync on), each with a fresh data dir, driven by a separate client process through the v3
HTTP/JSON gateway (``POST /v3/kv/put``, base64 key and value of 100 bytes, cycling over 4,096
keys; one keep-alive connection per request in flight, sent to the leader). Without etcd the
suite prints a note and reports nothing.

The client process: ``python -m benchmarks.peer_etcd load <inflight> <seconds> <host:port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.loadgen import (
    KEYS,
    VALUE_BYTES,
    WARMUP,
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


async def _load_client(inflight: int, seconds: float, address: str) -> None:
    host, _, port = address.rpartition(":")
    conns = [_HttpConnection(host, int(port)) for _ in range(inflight)]
    bodies = _etcd_bodies()

    async def issue(w: int, k: int) -> None:
        await conns[w].post("/v3/kv/put", bodies[k % KEYS])

    try:
        result = await _drive(issue, inflight, seconds, WARMUP)
    finally:
        for conn in conns:
            conn.close()
    print("result " + json.dumps(result), flush=True)


async def etcd_suite(root: Path, out: dict[str, float], seconds: float) -> None:
    exe = shutil.which("etcd")
    if exe is None:
        print("etcd: not installed (apt-get install etcd-server); skipped", flush=True)
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
        print(f"etcd: 3 members up; {load_text()}", flush=True)
        address = f"127.0.0.1:{leader_port}"
        for prefix, inflight in (("etcd_single", 1), ("etcd_inflight256", 256)):
            meter = _CpuMeter(pids)
            load = load_text()
            result = await _run_load(
                ["load", str(inflight), str(seconds), address], seconds + 60, meter, module=MODULE
            )
            print(_line(f"{inflight} in flight", result, load), flush=True)
            print("    " + meter.describe(result["client_cpu"]), flush=True)
            out.update(_report(prefix, result))
    finally:
        _kill_all(procs)


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
    p_load.add_argument("inflight", type=int)
    p_load.add_argument("seconds", type=float)
    p_load.add_argument("address")
    args = parser.parse_args(argv)
    _run_loop(_load_client(args.inflight, args.seconds, args.address))
    return 0


if __name__ == "__main__":
    sys.exit(main())
