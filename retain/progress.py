"""Progress of long steps (finetune, evaluation, alpha sweep): a tqdm bar on a terminal, and
elsewhere (a log file, CI, a pipe) a plain line every few seconds with the count, the elapsed time
and an estimate of what is left, so a log shows that a 2-minute step is alive and how far it got.

Example:
    >>> bar = progress_bar(300, "finetune", unit="steps")
    >>> for step in range(300):
    ...     bar.update(1)
    >>> bar.close()
    finetune: 150/300 steps, 5s elapsed, about 5s left     (in a log, every EVERY seconds)
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional, TextIO

EVERY = 5.0
"""Seconds between two lines in a log: often enough to see a step move, rarely enough to read.
RETAIN_PROGRESS_EVERY=SECONDS changes it (0: a line per update)."""


def progress_bar(total: Optional[int], desc: str, *, unit: str = "", show: bool = True,
                 stream: Optional[TextIO] = None, every: Optional[float] = None, initial: int = 0):
    """A tqdm bar when `stream` (default stderr) is a terminal, else `LogProgress`; None if not `show`.
    `initial`: units already done before this process (a resumed run), left out of the rate."""
    if not show:
        return None
    if every is None:
        try:
            every = max(0.0, float(os.environ.get("RETAIN_PROGRESS_EVERY", EVERY)))
        except ValueError:
            every = EVERY
    stream = stream or sys.stderr
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, file=stream, leave=False, unit=unit or "it", initial=initial)
    return LogProgress(total, desc, unit=unit, stream=stream, every=every, initial=initial)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LogProgress:
    """tqdm's update / set_postfix / close, written as one line per `every` seconds of work."""

    def __init__(self, total: Optional[int], desc: str, *, unit: str = "", stream: TextIO, every: float = EVERY,
                 clock=time.monotonic, initial: int = 0):
        self.total, self.desc, self.unit, self.stream, self.every, self.clock = total, desc, unit, stream, every, clock
        self.n = self.initial = initial
        self.postfix = ""
        self.start = self.last = clock()
        self.lines = 0

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float, done: bool = False) -> None:
        elapsed = now - self.start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {count}{' ' + self.unit if self.unit else ''}"]
        if done:
            parts.append(f"done in {_duration(elapsed)}")
        else:
            parts.append(f"{_duration(elapsed)} elapsed")
            if self.total and self.initial < self.n < self.total:
                parts.append(f"about {_duration(elapsed / (self.n - self.initial) * (self.total - self.n))} left")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=self.stream, flush=True)
        self.lines += 1

    def close(self) -> None:
        # A step that printed progress says when it ended; a short one stays silent.
        if self.lines:
            self._line(self.clock(), done=True)
