"""Prefill / decode throughput and peak resident memory."""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class SpeedResult:
    prompt_tokens: int
    decode_tokens: int
    repeats: int
    prefill_tps: float
    decode_tps: float


def measure_speed(runner, prompt: list[int], decode_tokens: int, repeats: int) -> SpeedResult:
    """One warm-up run, then the median of ``repeats`` timed runs (greedy, with the KV cache)."""
    runner.generate(prompt[: min(len(prompt), 16)], min(decode_tokens, 4))
    pre, dec = [], []
    for _ in range(max(1, repeats)):
        t = runner.generate(prompt, decode_tokens)
        pre.append(t.prefill_tps)
        dec.append(t.decode_tps)
    return SpeedResult(
        len(prompt), decode_tokens, max(1, repeats), statistics.median(pre), statistics.median(dec)
    )


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
