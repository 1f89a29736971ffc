"""Malformed reads and commands against a real 3-process hashmap cluster: each gets a clear
error answer, and the cluster keeps serving (a linearizable read of a key that is not UTF-8
used to kill the leader's loop, and then the next leader's as the client retried there).
Every wait is bounded; every process is killed when the test ends.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from raftpy.client import Client, SyncClient
from raftpy.errors import RemoteProtocolError
from raftpy.examples.hashmap import HashMapClient
from tests.examples.test_examples_process import leader_of, put_until_acknowledged
from tests.processhelpers import ProcessCluster

pytestmark = pytest.mark.process


def test_a_read_of_a_key_that_is_not_utf8_at_the_leader_harms_nothing(tmp_path: Path) -> None:
    with ProcessCluster("hashmap", 3, tmp_path).start_all() as c:
        with HashMapClient(c.addresses, timeout=10) as client:
            put_until_acknowledged(client, "k", "v")
        leader = leader_of(c)

        async def attack() -> None:
            async with Client([c.address(leader)], timeout=10) as client:
                for _ in range(3):
                    for consistency in ("linearizable", "stale"):
                        with pytest.raises(RemoteProtocolError, match="not UTF-8"):
                            await client.query(b"k\xff", consistency=consistency)
                with pytest.raises(RemoteProtocolError, match="malformed hashmap command"):
                    await client.propose(msgspec.msgpack.encode(()))

        asyncio.run(asyncio.wait_for(attack(), 60))
        for i in range(1, 4):
            assert c.procs[i].poll() is None, c.log(i)
            with SyncClient([c.address(i)], timeout=10) as status_client:
                assert status_client.status(c.address(i)).failed is None, c.log(i)
        with HashMapClient(c.addresses, timeout=10) as client:
            put_until_acknowledged(client, "after", 1)
            assert client.get("k") == "v"
            assert client.get("after") == 1
