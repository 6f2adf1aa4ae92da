"""Every evaluation metric declared once: its result field, label, unit, direction, display
precision and gate. Tables, gates, the build report, model cards and plots read this table.

Pure Python (no numpy), so the CLI can import it without loading the evaluation stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    key: str  # the EvalResult field (and eval.json / report.json key)
    label: str  # column heading
    unit: str = ""  # "%" (shown after the number), "tok/s", "bytes"
    better: str = ""  # "lower" | "higher" | "" (no direction: context, not quality)
    decimals: int = 3  # fixed decimals at least ...
    significant: int = 0  # ... and enough for this many significant digits (small KLDs)
    general: bool = False  # instead: ``significant`` digits in general format (perplexities)
    sign: bool = False  # always show the sign (+1.20)
    scale: float = 1.0  # shown as value * scale (top-1 agreement as a percentage)
    gate_alias: str | None = None  # --gate NAME=...; a gated metric's limit is named by direction

    @property
    def gate(self) -> str | None:
        """The gate's name in gates.toml and validation records: ``max_kld_mean``."""
        if self.gate_alias is None:
            return None
        return ("max_" if self.better == "lower" else "min_") + self.key

    def passes(self, value: float, limit: float) -> bool:
        if value != value:  # NaN fails
            return False
        return value <= limit if self.better == "lower" else value >= limit

    def format(self, value: Any, *, unit: bool = False) -> str:
        """The value as tables and cards show it; ``-`` for missing or NaN."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if self.unit == "bytes":
            from ..io import human_bytes

            return human_bytes(value) if value else "-"
        v = float(value) * self.scale
        if self.general:
            return format(v, f".{self.significant}g")
        decimals = self.decimals
        if self.significant and v != 0 and math.isfinite(v):
            decimals = max(decimals, self.significant - 1 - math.floor(math.log10(abs(v))))
        text = format(v, f"{'+' if self.sign else ''}.{decimals}f")
        return text + (self.unit if unit and self.unit == "%" else "")


METRICS: tuple[Metric, ...] = (
    Metric("perplexity", "PPL", better="lower", significant=4, general=True),
    Metric("base_perplexity", "base PPL", significant=4, general=True),
    Metric("ppl_increase_pct", "Δppl %", unit="%", better="lower", decimals=2, sign=True, gate_alias="ppl"),
    Metric("kld_mean", "KLD mean", better="lower", decimals=4, significant=3, gate_alias="kld"),
    Metric("kld_p99", "KLD p99", better="lower", decimals=4, significant=3),
    Metric(
        "top1_agreement",
        "top-1 %",
        unit="%",
        better="higher",
        decimals=1,
        scale=100.0,
        gate_alias="top1",
    ),
    Metric("prefill_tps", "prefill tok/s", unit="tok/s", better="higher", decimals=1),
    Metric("decode_tps", "decode tok/s", unit="tok/s", better="higher", decimals=1),
    Metric("peak_rss_bytes", "peak RSS", unit="bytes", better="lower"),
)
# the columns a results table shows (build report, `eval` and `quantize` tables)
TABLE_COLUMNS = (
    "perplexity",
    "base_perplexity",
    "ppl_increase_pct",
    "kld_mean",
    "top1_agreement",
    "prefill_tps",
    "decode_tps",
    "peak_rss_bytes",
)
BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
GATED: tuple[Metric, ...] = tuple(m for m in METRICS if m.gate)
GATE_NAMES: tuple[str, ...] = tuple(m.gate for m in GATED)  # type: ignore[misc]


def metric(key: str) -> Metric:
    return BY_KEY[key]


def gated_metric(gate: str) -> Metric:
    """The metric a gate name (``max_kld_mean``) or alias (``kld``) limits."""
    for m in GATED:
        if gate in (m.gate, m.gate_alias):
            return m
    raise KeyError(gate)


def columns(*keys: str) -> list[Metric]:
    """The declared metrics for these result fields, in the order given."""
    return [BY_KEY[k] for k in keys]
