"""Guided tours of raftpy, each a ``python -m`` command that prints a timeline:

- :mod:`raftpy.demos.cluster` (``make demo``): a real 3-node cluster of the hashmap example as
  server processes on 127.0.0.1: an election, writes and reads through the command line, the
  leader killed, a new leader, the dead node restarted and caught up;
- :mod:`raftpy.demos.sim` (``make demo-sim``): a simulated 5-node cluster in virtual time: an
  election, replication, a partition that isolates the leader, healing and convergence.
"""
