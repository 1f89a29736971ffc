"""Storage for Raft's persistent state: the in-memory twin and (later) the durable store."""

from raftpy.storage.memory import MemoryStorage

__all__ = ["MemoryStorage"]
