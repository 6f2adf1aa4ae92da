"""Pass/fail gates for validated artifacts, configurable, with defaults by nominal bit width."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path

from ..errors import UsageError

GATE_NAMES = ("max_ppl_increase_pct", "max_kld_mean", "min_top1_agreement")
_ALIASES = {"ppl": "max_ppl_increase_pct", "kld": "max_kld_mean", "top1": "min_top1_agreement"}


@dataclass(frozen=True)
class Gates:
    max_ppl_increase_pct: float | None = None
    max_kld_mean: float | None = None
    min_top1_agreement: float | None = None

    def with_overrides(self, overrides: dict[str, float | None]) -> Gates:
        return replace(self, **overrides) if overrides else self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float
    limit: float
    passed: bool


@cache
def _table() -> dict[int, Gates]:
    data = tomllib.loads((Path(__file__).with_name("gates.toml")).read_text())
    return {int(b): Gates(**v) for b, v in data["bits"].items()}


def default_gates(bits: int) -> Gates:
    table = _table()
    for b in sorted(table):  # the nearest class at or above these bits
        if bits <= b:
            return table[b]
    return table[max(table)]


def parse_gate_overrides(items: list[str] | tuple[str, ...]) -> dict[str, float | None]:
    """``["ppl=10", "kld=off"]`` -> ``{"max_ppl_increase_pct": 10.0, "max_kld_mean": None}``."""
    out: dict[str, float | None] = {}
    for item in items:
        key, sep, val = item.partition("=")
        name = _ALIASES.get(key.strip(), key.strip())
        if not sep or name not in GATE_NAMES:
            raise UsageError(
                f"bad gate '{item}'",
                hint="write NAME=VALUE with NAME one of ppl, kld, top1 "
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


def check_gates(
    gates: Gates, *, ppl_increase_pct: float | None, kld_mean: float | None, top1_agreement: float | None
) -> list[GateResult]:
    out = []
    checks = (
        ("max_ppl_increase_pct", ppl_increase_pct, lambda v, lim: v <= lim),
        ("max_kld_mean", kld_mean, lambda v, lim: v <= lim),
        ("min_top1_agreement", top1_agreement, lambda v, lim: v >= lim),
    )
    for name, value, ok in checks:
        limit = getattr(gates, name)
        if limit is None or value is None:
            continue
        passed = value == value and ok(value, limit)  # NaN fails
        out.append(GateResult(name, float(value), float(limit), bool(passed)))
    return out
