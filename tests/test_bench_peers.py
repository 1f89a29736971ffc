"""The pure parts of the benchmarks' peer suites: the protobuf encoding of etcd's PutRequest
(sent over gRPC with no generated stub). Needs neither grpcio nor etcd."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from benchmarks.peer_etcd import length_delimited, put_request, varint


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),  # the example in protobuf's encoding guide
        (2**32, b"\x80\x80\x80\x80\x10"),
    ],
)
def test_varint(n: int, encoded: bytes) -> None:
    assert varint(n) == encoded


def test_varint_refuses_negative_numbers() -> None:
    with pytest.raises(ValueError):
        varint(-1)


def _decode_varint(data: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[at]
        at += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, at


def test_length_delimited_is_key_length_bytes() -> None:
    assert length_delimited(1, b"abc") == b"\x0a\x03abc"  # key (1 << 3) | 2
    long = length_delimited(2, b"x" * 200)
    assert long[:3] == b"\x12\xc8\x01" and long[3:] == b"x" * 200


def test_put_request_has_key_then_value() -> None:
    data = put_request(b"key00042", b"v" * 100)
    fields: list[tuple[int, int, bytes]] = []
    at = 0
    while at < len(data):
        tag, at = _decode_varint(data, at)
        size, at = _decode_varint(data, at)
        fields.append((tag >> 3, tag & 7, data[at : at + size]))
        at += size
    assert fields == [(1, 2, b"key00042"), (2, 2, b"v" * 100)]


def test_grpcio_is_a_bench_extra_only() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    project = project["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("grpcio") for d in extras["bench"])
    for name in ("dev", *(e for e in extras if e != "bench")):
        assert not any(d.startswith("grpcio") for d in extras[name]), name
    assert not any(d.startswith("grpcio") for d in project["dependencies"])


def test_ratios_divide_this_runs_figures_and_skip_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.bench_cluster import RATIOS, TARGETS, ratios

    out = {
        "inflight256_writes_per_s": 30_000.0,
        "single_p50_ms": 1.0,
        "single_p99_ms": 2.5,
        "floor_inflight256_writes_per_s": 60_000.0,
        "floor_single_p50_ms": 0.5,
        "etcd_single_p50_ms": 0.0,  # unusable: not a ratio
    }
    assert ratios(out) == {
        "ratio_inflight256_vs_floor": 0.5,
        "ratio_single_p50_vs_floor": 2.0,
        "ratio_single_p99_vs_p50": 2.5,
    }
    notes = capsys.readouterr().out
    assert "ratio_inflight256_vs_etcd: not reported" in notes
    assert "ratio_single_p50_vs_etcd: not reported" in notes
    # Every ratio with a target is one the benchmark can compute.
    assert {k for k in TARGETS if k.startswith("ratio_")} <= set(RATIOS)
