"""Example replicated services: ``register`` (one string) and ``hashmap`` (string keys to JSON
values). Run ``python -m raftpy.examples.register --help``."""
