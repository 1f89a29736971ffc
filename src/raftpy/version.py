"""raftpy's version: the one place it is set (pyproject.toml reads it from here at build time).

A plain string, not ``importlib.metadata.version("raftpy")``: importing the metadata machinery
cost every process a third of its import of raftpy (~80 ms of ~280 on a 2-core VM), and every
server and command line imports raftpy at start.
"""

__version__ = "0.1.0"
