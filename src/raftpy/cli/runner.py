"""Running a subcommand's coroutine so that SIGTERM and SIGINT cancel it (its cleanup runs,
every process it started is stopped) instead of killing the command on the spot."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run_until_signal"]

_T = TypeVar("_T")


def run_until_signal(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on uvloop when installed; SIGTERM and SIGINT cancel it (so its cleanup
    runs) instead of killing the process."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional
        factory = None

    async def main() -> _T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())
