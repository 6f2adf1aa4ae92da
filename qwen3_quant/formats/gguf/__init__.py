"""GGUF for llama.cpp: the project's streaming writer (gguf-py), llama.cpp's quantiser and runtime."""

from __future__ import annotations

from ...catalog.architecture import ArchShape, iter_tensors
from ..base import GiB, QuantFormat, SizeEstimate
from .types import TABLE_TYPES, estimate_file_size, normalise_type


class GGUFFormat(QuantFormat):
    name = "gguf"
    extra = "gguf"
    runtime = "llama.cpp"
    table_types = TABLE_TYPES

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        ftype = normalise_type(variant)
        # streaming conversion holds one tensor (MoE: one layer's stacked experts) in f32 twice;
        # llama.cpp's quantiser then converts one tensor at a time to f32 and back
        biggest = max(t.total_numel for t in iter_tensors(arch, stacked=True))
        return SizeEstimate(
            artifact_bytes=estimate_file_size(arch, ftype),
            quantise_peak_bytes=int(8 * biggest + 0.75 * GiB),
        )


FORMAT = GGUFFormat()
