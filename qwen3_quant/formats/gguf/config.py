"""The GGUF format's options: which llama.cpp types, importance matrix, calibration, split size."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from ..base import CALIB, CALIB_SAMPLES, Option, takes
from .types import FILE_TYPES, UNQUANTISED, normalise_type

# the Hub refuses files over 50 GB; llama.cpp's own tools count G as 10^9 bytes
DEFAULT_MAX_SHARD = 45 * 1000**3
_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*$", re.IGNORECASE)
# the types whose llama.cpp kernels take an importance matrix (Q8_0 and the float types do not)
IMATRIX_TYPES = frozenset(t for t in FILE_TYPES if t not in UNQUANTISED and t != "Q8_0")
log = logging.getLogger(__name__)
OPTIONS = (
    Option(
        "types",
        "llama.cpp type(s), comma-separated (e.g. Q8_0,Q6_K,Q4_K_M).",
        list,
        flag="--type",
        default="Q4_K_M",
        metavar="TYPES",
    ),
    Option("imatrix", "Importance matrix for K-quants (default on for 4 bits and below).", bool),
    CALIB,
    CALIB_SAMPLES,
    Option("max_shard_size", "Split files above this size (e.g. 45G).", default="45G", metavar="SIZE"),
)


def nominal_bits(ftype: str) -> int:
    """Bits per weight that name a type's class: Q4_K_M -> 4, Q8_0 -> 8, BF16 -> 16."""
    from .autotype import parse_auto

    t = normalise_type(ftype)
    budget = parse_auto(t)
    if isinstance(budget, str):
        return nominal_bits(budget)
    if budget is not None:
        return int(budget)
    if t == "F32":
        return 32
    if t in ("F16", "BF16"):
        return 16
    m = re.match(r"^I?Q(\d)", t)
    return int(m.group(1)) if m else 16


def parse_size(text: str | int) -> int:
    """``45G`` -> 45*10^9 bytes (K/M/G/T are powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise UsageError(
                f"bad size '{text}'", hint="write a number of bytes with an optional unit: 500M, 45G, 2GiB"
            )
        num, unit, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
        scale = 1024 ** ("KMGT".index(unit) + 1) if binary and unit else _UNITS[unit]
        value = int(num * scale)
    if value < 1:
        raise UsageError(f"bad size '{text}'", hint="the size must be positive")
    return value


@dataclass(frozen=True)
class GGUFConfig:
    types: tuple[str, ...] = ("Q4_K_M",)
    imatrix: bool | None = None  # None: on for types of 4 bits and below that can use one
    calib: str = "default"
    calib_samples: int | None = None
    max_shard_size: int = DEFAULT_MAX_SHARD

    def uses_imatrix(self, ftype: str) -> bool:
        """Whether ``ftype`` is quantised with the importance matrix in this run."""
        if ftype.startswith("AUTO_"):
            return True  # an automatic mix measures each tensor's error with it (--no-imatrix is refused)
        if ftype not in IMATRIX_TYPES or self.imatrix is False:
            return False
        return True if self.imatrix else nominal_bits(ftype) <= 4

    @property
    def needs_imatrix(self) -> bool:
        return any(self.uses_imatrix(t) for t in self.types)


def parse_options(options: dict[str, Any]) -> GGUFConfig:
    """Validate the options the user gave (and only those) into a :class:`GGUFConfig`."""
    from .. import option_flag

    own = [o.name for o in OPTIONS]
    for key in options:
        if key not in own:
            raise UsageError(
                f"{option_flag(key)} does not apply to --format gguf",
                hint=takes("GGUF", OPTIONS),
            )
    raw = options.get("types")
    if raw is None:
        raw = ["Q4_K_M"]
    if isinstance(raw, str):
        raw = raw.split(",")
    types: list[str] = []
    for t in raw:
        if not str(t).strip():
            continue
        name = normalise_type(str(t))
        if name not in types:
            types.append(name)
    if not types:
        raise UsageError("--type is empty", hint="valid types: " + ", ".join(FILE_TYPES))
    if options.get("imatrix") is False and any(t.startswith("AUTO_") for t in types):
        raise UsageError(
            "--no-imatrix cannot go with an automatic type: it weighs each tensor's error by the importance matrix",
            hint="drop --no-imatrix, or name llama.cpp types",
        )
    samples = options.get("calib_samples")
    if samples is not None and int(samples) < 1:
        raise UsageError(f"--calib-samples {samples} must be at least 1", hint="e.g. --calib-samples 128")
    calib = str(options.get("calib") or "default")
    cfg = GGUFConfig(
        types=tuple(types),
        imatrix=options.get("imatrix"),
        calib=calib,
        calib_samples=int(samples) if samples is not None else None,
        max_shard_size=parse_size(options["max_shard_size"])
        if options.get("max_shard_size") is not None
        else DEFAULT_MAX_SHARD,
    )
    if ("calib" in options or "calib_samples" in options) and not cfg.needs_imatrix:
        # not an error: a build file gives one calibration to every cell, Q8_0 ones included
        why = "--no-imatrix" if cfg.imatrix is False else f"none of {', '.join(types)} uses one by default"
        log.warning(
            "--calib/--calib-samples only feed the importance matrix, and this run makes none (%s)", why
        )
    if cfg.needs_imatrix:
        from ...calib import load_mix

        load_mix(calib)  # an unknown mix fails here, before any heavy work
    return cfg
