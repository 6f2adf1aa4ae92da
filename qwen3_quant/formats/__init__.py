"""Registry of quantisation formats, keyed by format name.

Adding a format: one package under ``qwen3_quant.formats`` exposing a :class:`QuantFormat`
object, and one line here.
"""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import UnknownFormatError
from .base import QuantFormat, SizeEstimate

__all__ = ["FORMATS", "get_format", "all_formats", "QuantFormat", "SizeEstimate"]

FORMATS: dict[str, str] = {
    "gguf": "qwen3_quant.formats.gguf:FORMAT",
    "gptq": "qwen3_quant.formats.gptqmodel:GPTQ_FORMAT",
    "awq": "qwen3_quant.formats.gptqmodel:AWQ_FORMAT",
    "onnx": "qwen3_quant.formats.onnx:FORMAT",
}


@cache
def get_format(name: str) -> QuantFormat:
    key = name.strip().lower()
    if key not in FORMATS:
        raise UnknownFormatError(f"unknown format '{name}'", hint="choose one of: " + ", ".join(FORMATS))
    module, attr = FORMATS[key].split(":")
    return getattr(importlib.import_module(module), attr)


def all_formats() -> list[QuantFormat]:
    return [get_format(n) for n in FORMATS]
