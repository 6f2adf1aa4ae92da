"""Typed configuration of a GPTQ / AWQ run, parsed from the options the user gave.

Every option is checked here, before a model is downloaded or loaded.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import UsageError
from ..base import CALIB, CALIB_SAMPLES, Option, takes

METHODS = ("gptq", "awq", "rtn")  # rtn: GPTQModel's round-to-nearest, the benchmark's baseline
BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
STARVED_POLICIES = ("fail", "calibrate-all", "rtn")
DEFAULT_STARVED_POLICY = "rtn"
DEFAULT_STARVED_THRESHOLD = "0.5%"
DAMP_PERCENT = 0.05  # GPTQModel's default dampening of the Hessian diagonal


def options_for(method: str) -> tuple[Option, ...]:
    """The options of ``--format gptq`` or ``awq``."""
    bits = "4 or 8" if method == "gptq" else "4"
    sym = "symmetric (default)" if method != "awq" else "with zero points (default)"
    opts = [
        Option("bits", f"Weight bits: {bits}.", int, default=4),
        Option("group_size", "Group size: 32, 64 or 128.", int, default=128),
        Option("sym", f"Symmetric or asymmetric quantisation; {sym}.", bool, flag="--sym", off_flag="--asym"),
        Option("act_order", "Quantise columns by activation order.", bool, default=False),
        CALIB,
        CALIB_SAMPLES,
        Option("starved_experts", "MoE: fail, calibrate-all or rtn.", default=DEFAULT_STARVED_POLICY),
        Option(
            "starved_threshold",
            "MoE: experts routed fewer calibration tokens are starved: a count or a % of them.",
            default=DEFAULT_STARVED_THRESHOLD,
        ),
    ]
    return tuple(o for o in opts if o.name != "act_order" or method == "gptq")


_THRESHOLD = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<pct>%?)\s*$")


@dataclass(frozen=True)
class GPTQModelConfig:
    """One GPTQ, AWQ or RTN run with GPTQModel.

    ``sym`` defaults differ by method, as in the checkpoints people already serve: GPTQ symmetric
    (Qwen's GPTQ-Int4/Int8 releases, the Marlin fast path), AWQ with zero points (Qwen's AWQ
    releases, AutoAWQ's default, vLLM's AWQ-Marlin path).
    """

    method: str
    bits: int = 4
    group_size: int = 128
    sym: bool = True
    act_order: bool = False
    calib: str = "default"
    calib_samples: int | None = None
    starved_experts: str = DEFAULT_STARVED_POLICY
    starved_experts_given: bool = False
    starved_threshold: str = DEFAULT_STARVED_THRESHOLD
    damp_percent: float = DAMP_PERCENT

    @property
    def variant(self) -> str:
        return f"W{self.bits}g{self.group_size}"

    @property
    def default_sym(self) -> bool:
        return self.method != "awq"

    def name_suffix(self) -> str:
        """Qwen's release names (``-GPTQ-Int4``, ``-AWQ``), plus what differs from their recipe."""
        if self.method == "awq":
            base = "-AWQ" if self.bits == 4 else f"-AWQ-Int{self.bits}"
        elif self.method == "gptq":
            base = f"-GPTQ-Int{self.bits}"
        else:
            base = f"-RTN-Int{self.bits}"
        if self.group_size != 128:
            base += f"-g{self.group_size}"
        if self.sym != self.default_sym:
            base += "-sym" if self.sym else "-asym"
        if self.act_order:
            base += "-act-order"
        return base

    def key(self) -> dict[str, Any]:
        """What makes two runs produce the same artifact (besides source and calibration tokens)."""
        d = asdict(self)
        d.pop("starved_experts_given")
        d.pop("calib")  # the calibration set is compared by its token hash instead
        d.pop("calib_samples")
        return d


def parse_threshold(value: Any) -> str:
    """``"0.5%"`` (of the calibration tokens) or a token count such as ``32``."""
    m = _THRESHOLD.match(str(value))
    if not m or (m["pct"] and not 0 < float(m["num"]) < 100):
        raise UsageError(
            f"bad --starved-threshold '{value}'",
            hint="give a token count (e.g. 32) or a percentage of the calibration tokens (e.g. 0.5%)",
        )
    return f"{float(m['num']):g}%" if m["pct"] else str(int(float(m["num"])))


def threshold_tokens(spec: str, total_tokens: int) -> float:
    """The token count below which an expert is starved."""
    if spec.endswith("%"):
        return float(spec[:-1]) / 100.0 * total_tokens
    return float(spec)


def parse_options(method: str, options: dict[str, Any]) -> GPTQModelConfig:
    """Validate the options the user gave (only those) into a :class:`GPTQModelConfig`."""
    if method not in METHODS:
        raise UsageError(f"unknown weight-only method '{method}'", hint="one of: " + ", ".join(METHODS))
    fmt = method.upper()
    own = options_for(method)
    extra = [k for k in options if k not in [o.name for o in own] and k != "act_order"]
    if extra:
        from .. import option_flag

        raise UsageError(f"{option_flag(extra[0])} does not apply to {fmt}", hint=takes(fmt, own))
    kw: dict[str, Any] = {"method": method, "sym": method != "awq"}
    if "bits" in options:
        bits = options["bits"]
        if not isinstance(bits, int) or bits not in BITS:
            raise UsageError(f"{fmt} cannot use --bits {bits}", hint="use --bits 4 or --bits 8")
        if method == "awq" and bits != 4:
            # measured on Qwen3-Micro: 8-bit AWQ from GPTQModel 7.6 has 30-50% weight error on about
            # one output channel in eight (mean KLD 7e-4, worse than its 4-bit AWQ; 8-bit RTN 2e-6)
            raise UsageError(
                "AWQ supports --bits 4 only here: GPTQModel's 8-bit AWQ corrupts some output channels "
                "(see benchmarks/gptq.md), and vLLM / SGLang serve 4-bit AWQ only",
                hint="use --format gptq --bits 8",
            )
        kw["bits"] = bits
    if "group_size" in options:
        g = options["group_size"]
        if not isinstance(g, int) or g not in GROUP_SIZES:
            raise UsageError(f"{fmt} cannot use --group-size {g}", hint="use --group-size 32, 64 or 128")
        kw["group_size"] = g
    if "sym" in options:
        kw["sym"] = bool(options["sym"])
    if options.get("act_order"):
        if method != "gptq":
            raise UsageError(
                f"--act-order does not apply to {fmt}",
                hint="AWQ scales salient channels instead of reordering them; use --format gptq --act-order",
            )
        kw["act_order"] = True
    if "calib" in options:
        from ...calib import load_mix

        load_mix(options["calib"])  # an unknown mix or a broken file fails here, before any work
        kw["calib"] = str(options["calib"])
    if "calib_samples" in options:
        n = options["calib_samples"]
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"bad --calib-samples {n}", hint="give a positive number of samples, e.g. 128")
        kw["calib_samples"] = n
    if "starved_experts" in options:
        policy = str(options["starved_experts"]).strip().lower()
        if policy not in STARVED_POLICIES:
            raise UsageError(
                f"unknown --starved-experts policy '{options['starved_experts']}'",
                hint="use fail, calibrate-all or rtn",
            )
        kw["starved_experts"] = policy
        kw["starved_experts_given"] = True
    if "starved_threshold" in options:
        kw["starved_threshold"] = parse_threshold(options["starved_threshold"])
        kw["starved_experts_given"] = True
    return GPTQModelConfig(**kw)
