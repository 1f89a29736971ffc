"""The live dashboard of a running cluster (``raftpy dashboard ADDR...``; docs/dashboard.md).

- :mod:`raftpy.dashboard.poller`: asks every member for its status every interval and keeps
  the last 10 minutes of answers;
- :mod:`raftpy.dashboard.samples`: that bounded history and the write rate and latency series
  computed from it;
- :mod:`raftpy.dashboard.picture`: the JSON picture of the cluster served at ``/api/cluster``;
- :mod:`raftpy.dashboard.server`: the web server (aiohttp, the optional extra ``dashboard``:
  ``pip install 'raftpy[dashboard]'``), imported only when serving.
"""

from __future__ import annotations

from raftpy.dashboard.picture import cluster_picture
from raftpy.dashboard.poller import DEFAULT_INTERVAL, DEFAULT_WINDOW, NodeView, Poller

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_WINDOW", "NodeView", "Poller", "cluster_picture"]
