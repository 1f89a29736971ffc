"""Progress of long work, for the person watching a command: ``raftpy jepsen`` (its phases and
the time left), ``make bench`` (which benchmark runs, n of m), ``raftpy members add`` (how far
a learner has caught up).

One :class:`Progress` per command, writing to one stream (stderr, usually). What it shows
depends on where that stream goes:

- a terminal, with ``rich`` installed (the optional ``cli`` extra): phase lines that stay, and
  a live bar for the current step (count, percentage, time left), drawn below them;
- a terminal without ``rich``: the phase lines, and a plain line about the step at most once
  a second;
- anything else (a pipe, a file, CI): the phase lines, and a line about the step at most every
  ``every`` seconds (``piped="lines"``), or nothing at all (``piped="quiet"``), for commands
  whose output is read by programs.

A *step* is counted (:meth:`Progress.step`, then :meth:`Progress.update` with how much is
done) or timed (:meth:`Progress.timed`: a known duration; the clock is the progress, so it
moves by itself). Only the command-line front ends use this module: nothing in the library's
runtime imports it, and ``rich`` is imported only when a terminal is there to draw on.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

__all__ = ["Piped", "Progress"]

Piped = Literal["lines", "quiet"]
"""What a :class:`Progress` shows when its stream is not a terminal."""

# On a terminal without rich, a plain line about the step at most this often (seconds).
_TERMINAL_EVERY = 1.0
# How often a timed step's bar moves on a terminal with rich (seconds).
_RICH_TICK = 0.5


def _rich_progress(stream: TextIO) -> Any:
    """A started rich ``Progress`` drawing on ``stream``, or None without rich."""
    try:
        progress = importlib.import_module("rich.progress")
        console = importlib.import_module("rich.console")
    except ImportError:
        return None
    bar = progress.Progress(
        progress.TextColumn("{task.description}"),
        progress.BarColumn(),
        progress.TaskProgressColumn(),
        progress.TextColumn("{task.fields[left]}"),
        progress.TimeElapsedColumn(),
        console=console.Console(file=stream),
        transient=True,
    )
    bar.start()
    return bar


class Progress:
    """Phases and one step at a time, shown as the module docstring says. ``prefix`` starts
    every plain line (``"raftpy jepsen: "``); ``every`` is the least time between two lines
    about a step when the stream is not a terminal; ``clock`` is for tests."""

    def __init__(
        self,
        stream: TextIO,
        *,
        prefix: str = "",
        piped: Piped = "lines",
        every: float = 10.0,
        use_rich: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._prefix = prefix
        self._clock = clock
        terminal = stream.isatty()
        self._quiet = not terminal and piped == "quiet"
        self._every = _TERMINAL_EVERY if terminal else every
        self._rich: Any = _rich_progress(stream) if terminal and use_rich else None
        self._task: Any = None
        self._lock = threading.Lock()
        self._text = ""
        self._total: float | None = None
        self._timed_from: float | None = None
        self._last_line = float("-inf")
        self._ticker: threading.Thread | None = None
        self._stop_ticking = threading.Event()

    @property
    def mode(self) -> Literal["rich", "lines", "quiet"]:
        """How this progress is shown (see the module docstring)."""
        if self._quiet:
            return "quiet"
        return "rich" if self._rich is not None else "lines"

    def phase(self, text: str) -> None:
        """A new phase: ends the current step and shows ``text`` as a line that stays."""
        self._end_step()
        self._line(text)

    def step(self, text: str, total: float | None = None) -> None:
        """Start a counted step of ``total`` units (``None``: not known yet)."""
        self._end_step()
        with self._lock:
            self._text, self._total, self._timed_from = text, total, None
            self._last_line = float("-inf")  # the first update is shown at once
            if self._rich is not None:
                self._task = self._rich.add_task(text, total=total, left="")

    def timed(self, text: str, seconds: float) -> None:
        """Start a step that lasts ``seconds``: it shows the time left and moves by itself
        until the next phase or step, or :meth:`close`."""
        self.step(text, seconds)
        with self._lock:
            self._timed_from = self._clock()
        if self.mode == "quiet":
            return
        self._stop_ticking = stop = threading.Event()
        period = _RICH_TICK if self._rich is not None else min(self._every, _RICH_TICK)
        self._ticker = threading.Thread(
            target=self._tick, args=(stop, period), name="raftpy-progress", daemon=True
        )
        self._ticker.start()

    def update(self, done: float, total: float | None = None, *, line: str | None = None) -> None:
        """``done`` units of the current step are done (of ``total``, when it changed).
        ``line``: the plain line to show for it (default ``"<step>: <done> of <total>"``)."""
        with self._lock:
            if total is not None:
                self._total = total
            if self._rich is not None and self._task is not None:
                self._rich.update(self._task, completed=done, total=self._total)
                return
            now = self._clock()
            if self._quiet or now - self._last_line < self._every:
                return
            self._last_line = now
        if line is None:
            of = "" if self._total is None else f" of {self._total:g}"
            line = f"{self._text}: {done:g}{of}"
        self._line(line)

    def close(self) -> None:
        """End the current step and take the bar off the terminal."""
        self._end_step()
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, text: str) -> None:
        if self._quiet:
            return
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            print(f"{self._prefix}{text}", file=self._stream, flush=True)

    def _tick(self, stop: threading.Event, period: float) -> None:
        while not stop.wait(period):
            with self._lock:
                started, total = self._timed_from, self._total
            if started is None or total is None:
                return
            elapsed = min(self._clock() - started, total)
            left = f"{total - elapsed:.0f} s left"
            if self._rich is not None:
                with self._lock:
                    if self._task is not None:
                        self._rich.update(self._task, completed=elapsed, left=left)
            else:
                self.update(elapsed, line=f"{self._text}: {left}")

    def _end_step(self) -> None:
        self._stop_ticking.set()
        ticker, self._ticker = self._ticker, None
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=2.0)
        with self._lock:
            if self._rich is not None and self._task is not None:
                self._rich.remove_task(self._task)
            self._task = None
            self._timed_from = None
