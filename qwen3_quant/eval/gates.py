"""Pass/fail gates for validated artifacts, configurable, with defaults by nominal bit width.

Which metrics are gated, in which direction, and under which names comes from
:mod:`.metric_table`; the default limits per bit width from ``gates.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

from ..errors import UsageError
from .metric_table import GATE_NAMES, GATED, gated_metric

__all__ = ["GATE_NAMES", "Gates", "GateResult", "default_gates", "parse_gate_overrides", "check_gates"]


class Gates:
    """Limits by gate name (``max_kld_mean``); ``None`` switches a gate off. Read a limit as an
    attribute (``gates.max_kld_mean``)."""

    __slots__ = ("_limits",)

    def __init__(self, limits: Mapping[str, float | None] | None = None, **named: float | None):
        merged = {**(limits or {}), **named}
        unknown = [k for k in merged if k not in GATE_NAMES]
        if unknown:
            raise UsageError(f"unknown gate '{unknown[0]}'", hint="gates: " + ", ".join(GATE_NAMES))
        self._limits = MappingProxyType({g: merged.get(g) for g in GATE_NAMES})

    def __getattr__(self, name: str) -> float | None:
        try:
            return self._limits[name]
        except KeyError:
            raise AttributeError(name) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Gates) and dict(self._limits) == dict(other._limits)

    def __repr__(self) -> str:
        return f"Gates({dict(self._limits)})"

    def with_overrides(self, overrides: Mapping[str, float | None] | None) -> Gates:
        return Gates({**self._limits, **overrides}) if overrides else self

    def to_dict(self) -> dict[str, float | None]:
        return dict(self._limits)


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float
    limit: float
    passed: bool


@cache
def _table() -> dict[int, Gates]:
    data = tomllib.loads((Path(__file__).with_name("gates.toml")).read_text())
    return {int(b): Gates(v) for b, v in data["bits"].items()}


def default_gates(bits: int) -> Gates:
    table = _table()
    for b in sorted(table):  # the nearest class at or above these bits
        if bits <= b:
            return table[b]
    return table[max(table)]


def parse_gate_overrides(items: list[str] | tuple[str, ...]) -> dict[str, float | None]:
    """``["ppl=10", "kld=off"]`` -> ``{"max_ppl_increase_pct": 10.0, "max_kld_mean": None}``."""
    out: dict[str, float | None] = {}
    aliases = ", ".join(m.gate_alias for m in GATED)
    for item in items:
        key, sep, val = item.partition("=")
        try:
            name = gated_metric(key.strip()).gate
        except KeyError:
            name = None
        if not sep or name is None:
            raise UsageError(
                f"bad gate '{item}'",
                hint=f"write NAME=VALUE with NAME one of {aliases} "
                "(or " + ", ".join(GATE_NAMES) + ") and VALUE a number or off",
            )
        if val.strip().lower() in ("off", "none", ""):
            out[name] = None
            continue
        try:
            out[name] = float(val)
        except ValueError as exc:
            raise UsageError(f"bad gate value in '{item}'", hint="use a number, or off") from exc
    return out


def check_gates(gates: Gates, **values: float | None) -> list[GateResult]:
    """Judge the gated metrics given by result field (``kld_mean=0.01``); a metric without a value
    or a gate switched off is not judged."""
    out = []
    for m in GATED:
        limit = getattr(gates, m.gate)
        value = values.get(m.key)
        if limit is None or value is None:
            continue
        out.append(GateResult(m.gate, float(value), float(limit), m.passes(float(value), float(limit))))
    return out
