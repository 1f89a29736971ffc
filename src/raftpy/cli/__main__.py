"""``python -m raftpy.cli``: the ``raftpy`` command."""

from raftpy.cli import main

raise SystemExit(main())
