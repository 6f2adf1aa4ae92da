"""GGUF for llama.cpp: the project's streaming writer (gguf-py), llama.cpp's quantiser and runtime."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

from ...catalog.architecture import ArchShape, iter_tensors
from ..base import GiB, Progress, QuantFormat, SizeEstimate, largest_layer_params, no_progress
from .config import GGUFConfig, nominal_bits, parse_options
from .types import TABLE_TYPES, estimate_file_size, normalise_type

CALIB_TOKENS = 128 * 512  # the default mix: 128 samples of up to 512 tokens


class GGUFFormat(QuantFormat):
    name = "gguf"
    extra = "gguf"
    cell_axis = "types"
    card_description, hub_library = "GGUF files for llama.cpp", "gguf"
    seconds_per_billion, min_seconds = 90.0, 20.0
    runtime = "llama.cpp"
    table_types = TABLE_TYPES
    implemented = True

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        ftype = normalise_type(variant)
        # llama.cpp's quantiser holds one tensor (MoE: one layer's stacked experts) in f32 plus its
        # quantised copy; the converter streams chunks. The importance matrix (on by default at 4
        # bits and below) runs the model one layer at a time: a layer (bf16 at least, with copies
        # while it is assembled), the embedding table once, and the calibration's hidden states
        biggest = max(t.total_numel for t in iter_tensors(arch, stacked=True))
        peak = int(5 * biggest + 0.75 * GiB)
        if GGUFConfig(types=(ftype,)).uses_imatrix(ftype):
            hidden_states = 2 * 4 * CALIB_TOKENS * arch.hidden_size
            layer = 5 * largest_layer_params(arch)
            peak = max(peak, int(layer + 2 * arch.vocab_size * arch.hidden_size + hidden_states + GiB))
        return SizeEstimate(artifact_bytes=estimate_file_size(arch, ftype), quantise_peak_bytes=peak)

    def nominal_bits(self, variant: str) -> int:
        return nominal_bits(variant)

    def available(self) -> bool:
        return find_spec("gguf") is not None and find_spec("llama_cpp") is not None

    def calibrates(self, config: GGUFConfig) -> bool:
        return config.needs_imatrix

    def parse_options(self, options: dict[str, Any]) -> GGUFConfig:
        return parse_options(options)

    def artifact_name(self, model_name: str, config: GGUFConfig) -> str:
        return f"{model_name}-GGUF"

    def variants(self, config: GGUFConfig) -> list[str]:
        return list(config.types)

    def quantize(
        self,
        source,
        info,
        config: GGUFConfig,
        out_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress = no_progress,
    ) -> list[str]:
        from ...quantize import command_line
        from .build import GGUFBuild

        build = GGUFBuild(
            source,
            info,
            config,
            Path(out_dir),
            overwrite=overwrite,
            progress=progress,
            command=command_line(),
        )
        return build.run()


FORMAT = GGUFFormat()
