"""ONNX for onnxruntime: onnxruntime-genai's builder for dense Qwen3, the project's exporter for MoE.

Importing this package is instant: the builder, torch and onnx load only when converting.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...catalog.architecture import ArchShape
from ..base import (
    Progress,
    QuantFormat,
    Runtime,
    SizeEstimate,
    UsageContext,
    no_progress,
)
from .config import BITS, OPTIONS, PRECISIONS, OnnxConfig, parse_onnx_options
from .sizes import export_peak_bytes, onnx_bytes

if TYPE_CHECKING:
    from ...checkpoint import CheckpointInfo
    from ...provenance import Provenance
    from ...sources import ModelSource

__all__ = ["FORMAT", "ONNXFormat", "OnnxConfig", "PRECISIONS", "onnx_bytes"]

_MODULES = ("onnx", "onnxruntime", "onnxruntime_genai", "onnx_ir")


class ONNXFormat(QuantFormat):
    name = "onnx"
    extra = "onnx"
    libraries = ("onnx", "onnxruntime", "onnxruntime-genai")
    options = OPTIONS
    runtimes = (Runtime("onnxruntime", "qwen3_quant.formats.onnx.runner:OnnxRuntimeRunner", "onnxruntime"),)
    cell_axis = "precision"
    card_description, hub_library = "ONNX model for onnxruntime-genai", "onnxruntime-genai"
    recipe_labels = {
        "precision": "Precision",
        "block_size": "Block size",
        "accuracy_level": "Accuracy level",
    }
    table_types = ("int4", "int8")

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        # the export streams a decoder layer at a time (stream.py): one layer or the output head
        return SizeEstimate(onnx_bytes(arch, variant.lower()), export_peak_bytes(arch, variant))

    def nominal_bits(self, variant: str) -> int:
        return BITS.get(variant.strip().lower(), 16)

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in _MODULES)

    def calibrates(self, config: OnnxConfig) -> bool:
        return False  # round-to-nearest or k-quant weight quantisers: no calibration data

    def parse_options(self, options: dict[str, Any]) -> OnnxConfig:
        return parse_onnx_options(options)

    def artifact_name(self, model_name: str, config: OnnxConfig) -> str:
        return f"{model_name}-ONNX-{config.precision}"

    def variants(self, config: OnnxConfig) -> list[str]:
        return [config.precision]

    def quantize(
        self,
        source: ModelSource,
        info: CheckpointInfo,
        config: OnnxConfig,
        out_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress = no_progress,
        provenance: Provenance | None = None,
        device=None,  # the builder converts on the CPU (gpu_quantise is False)
    ) -> list[str]:
        from .convert import quantize_onnx

        return quantize_onnx(
            source, info, config, out_dir, overwrite=overwrite, progress=progress, provenance=provenance
        )

    def recognises(self, path: Path) -> str | None:
        p = Path(path)
        if p.is_file():
            return self.runtime if p.suffix == ".onnx" else None
        if p.is_dir() and ((p / "genai_config.json").is_file() or any(p.glob("*.onnx"))):
            return self.runtime
        return None

    def usage(self, ctx: UsageContext) -> str:
        from .usage import onnx_usage

        return onnx_usage(ctx)

    def write_test_double(self, folder: Path, model: str, variant: str, bits: int, **kw: Any):
        from .double import write_onnx_double

        return write_onnx_double(folder, model, variant, bits, **kw)


FORMAT = ONNXFormat()
