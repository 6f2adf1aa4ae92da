"""ONNX for onnxruntime: onnxruntime-genai's builder for dense Qwen3, the project's exporter for MoE.

Importing this package is instant: the builder, torch and onnx load only when converting.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...catalog.architecture import ArchShape
from ..base import GiB, Progress, QuantFormat, SizeEstimate, kept_tensor_bytes, linear_tensors, no_progress
from .config import BITS, PRECISIONS, OnnxConfig, parse_onnx_options
from .sizes import onnx_bytes

if TYPE_CHECKING:
    from ...checkpoint import CheckpointInfo
    from ...sources import ModelSource

__all__ = ["FORMAT", "ONNXFormat", "OnnxConfig", "PRECISIONS", "onnx_bytes"]

_MODULES = ("onnx", "onnxruntime", "onnxruntime_genai", "onnx_ir")


class ONNXFormat(QuantFormat):
    name = "onnx"
    extra = "onnx"
    cell_axis = "precision"
    card_description, hub_library = "ONNX model for onnxruntime-genai", "onnxruntime-genai"
    runtime = "onnxruntime"
    table_types = ("int4", "int8")
    implemented = True

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        size = onnx_bytes(arch, variant.lower())
        params = sum(t.total_numel for t in linear_tensors(arch)) + kept_tensor_bytes(arch, 1)
        # measured on a 335M-parameter bf16 checkpoint: the builder holds the checkpoint (2 bytes a
        # weight) and streams fp32 out (peak 3 bytes a weight above the libraries' 0.4 GB); int4/int8
        # also keep the fp32 graph and its copy while MatMulNBits runs (8 bytes a weight)
        per_param = 8 if variant.lower() in ("int4", "int8") else 3
        return SizeEstimate(size, int(per_param * params + 1.0 * GiB))

    def nominal_bits(self, variant: str) -> int:
        return BITS.get(variant.strip().lower(), 16)

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in _MODULES)

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
    ) -> list[str]:
        from ...quantize import command_line
        from .convert import quantize_onnx

        return quantize_onnx(
            source, info, config, out_dir, overwrite=overwrite, progress=progress, command=command_line()
        )


FORMAT = ONNXFormat()
