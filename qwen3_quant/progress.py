"""Progress as plain lines, for logs and CI where a progress bar shows nothing until the end.

The library reports progress through a :data:`~qwen3_quant.formats.base.Progress` callback
``(stage, done, total)`` that its caller passes in; the CLI chooses how to show it (a rich bar on
a terminal, :class:`PlainProgress` otherwise) and build workers always use :class:`PlainProgress`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def elapsed_text(seconds: float) -> str:
    """``0:07``, ``12:05``, ``1:02:03``."""
    s = int(max(seconds, 0))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _count(n: float) -> str:
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


class PlainProgress:
    """A progress callback writing one line per report worth showing:
    ``[12:05] Qwen3-8B GGUF: converting Qwen3-8B to Q4_K_M 120/399 (30%)``.

    A line is written when a stage starts, when it finishes, and otherwise at most every
    ``interval`` seconds per stage (every step of a stage of at most ``small`` steps), so a long
    run leaves a readable log. ``label`` names what runs (model and format, or a build cell).
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        label: str = "",
        interval: float = 30.0,
        small: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.label, self.interval, self.small, self.clock = stream, label, interval, small, clock
        self.started = clock()
        self._shown: dict[str, tuple[float, float]] = {}  # stage -> (when shown, done shown)

    def __call__(self, stage: str, done: float, total: float) -> None:
        now = self.clock()
        last = self._shown.get(stage)
        finished = total > 0 and done >= total
        if last is not None:
            if done == last[1]:
                return  # nothing new
            if not finished and total > self.small and now - last[0] < self.interval:
                return
        self._shown[stage] = (now, done)
        amount = f"{_count(done)}/{_count(total)}" if total else _count(done)
        pct = f" ({100 * done / total:.0f}%)" if total and total > 1 else ""
        self.write(f"{stage} {amount}{pct}")

    def write(self, text: str) -> None:
        """One line, stamped with the elapsed time and the label."""
        head = f"[{elapsed_text(self.clock() - self.started)}]" + (f" {self.label}:" if self.label else "")
        self.stream.write(f"{head} {text}\n")
        self.stream.flush()
