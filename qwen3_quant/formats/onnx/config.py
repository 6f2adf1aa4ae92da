"""The ONNX format's options, checked before any heavy work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from .. import int_choice
from ..base import Option

PRECISIONS = ("fp32", "fp16", "int8", "int4")
BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
BLOCK_SIZES = (32, 64, 128)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
QUANTIZERS = ("rtn", "k_quant")
DEFAULT_PRECISION = "int4"
DEFAULT_BLOCK_SIZE = 32
# MatMulNBits on the CPU: 4 quantises activations to int8 per block, the builder's CPU default
DEFAULT_ACCURACY_LEVEL = 4
DEFAULT_QUANTIZER = "rtn"

# the options this format takes, and the precisions each applies to
OPTIONS = (
    Option("precision", "fp32, fp16, int8 or int4.", default=DEFAULT_PRECISION),
    Option("block_size", "int4: 32, 64 or 128.", int, default=DEFAULT_BLOCK_SIZE),
    Option(
        "accuracy_level", "int4/int8: MatMulNBits accuracy level (0-4).", int, default=DEFAULT_ACCURACY_LEVEL
    ),
    Option("quantizer", "int4 weight quantiser: rtn or k_quant.", default=DEFAULT_QUANTIZER),
)
_INT_ONLY = {"block_size": ("int4",), "quantizer": ("int4",), "accuracy_level": ("int4", "int8")}


@dataclass(frozen=True)
class OnnxConfig:
    """One ONNX artifact: the precision of its weights and, for the int ones, how they are quantised.

    ``block_size`` and ``quantizer`` apply to int4 (int8 is always block 32, round-to-nearest);
    ``accuracy_level`` is MatMulNBits' compute precision for int4 and int8 (0 unset, 1 fp32,
    2 fp16, 3 bf16, 4 int8 activations).
    """

    precision: str = DEFAULT_PRECISION
    block_size: int | None = None
    accuracy_level: int | None = None
    quantizer: str | None = None

    @property
    def bits(self) -> int:
        return BITS[self.precision]

    @property
    def is_int(self) -> bool:
        return self.precision in ("int4", "int8")


def parse_onnx_options(options: dict[str, Any]) -> OnnxConfig:
    """Validate the options the user gave (``None`` values count as not given) into an
    :class:`OnnxConfig` with every default filled in."""
    from .. import option_flag

    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if key not in [o.name for o in OPTIONS]:
            raise UsageError(
                f"{option_flag(key)} does not apply to --format onnx",
                hint="ONNX takes --precision fp32|fp16|int8|int4, and for int4 --block-size, "
                "--quantizer and --accuracy-level",
            )
    precision = str(given.get("precision", DEFAULT_PRECISION)).strip().lower()
    if precision not in PRECISIONS:
        raise UsageError(
            f"unknown ONNX precision '{given['precision']}'", hint="choose one of: " + ", ".join(PRECISIONS)
        )
    for key, allowed in _INT_ONLY.items():
        if key in given and precision not in allowed:
            raise UsageError(
                f"{option_flag(key)} does not apply to --precision {precision}",
                hint=f"{option_flag(key)} applies to --precision {' or '.join(allowed)}; drop it",
            )
    block_size = accuracy = quantizer = None
    if precision in ("int4", "int8"):
        block_size = int_choice(given, "block_size", BLOCK_SIZES, DEFAULT_BLOCK_SIZE)
        accuracy = int_choice(given, "accuracy_level", ACCURACY_LEVELS, DEFAULT_ACCURACY_LEVEL)
        quantizer = str(given.get("quantizer", DEFAULT_QUANTIZER)).strip().lower().replace("-", "_")
        if quantizer not in QUANTIZERS:
            raise UsageError(
                f"unknown ONNX weight quantiser '{given['quantizer']}'",
                hint="choose one of: " + ", ".join(QUANTIZERS),
            )
    return OnnxConfig(precision, block_size, accuracy, quantizer)
