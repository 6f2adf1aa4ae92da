"""ONNX for onnxruntime: onnxruntime-genai's builder for dense Qwen3, the project's exporter for MoE."""

from __future__ import annotations

from ...catalog.architecture import ArchShape
from ...errors import UsageError
from ..base import GiB, QuantFormat, SizeEstimate, kept_tensor_bytes, linear_tensors

PRECISIONS = ("fp32", "fp16", "int8", "int4")


def onnx_bytes(arch: ArchShape, precision: str, block_size: int = 32) -> int:
    """fp32/fp16: every weight at that width. int4/int8: MatMulNBits weights (packed ints,
    one fp32 scale per block) with the embedding kept in fp32 and the lm_head quantised too."""
    if precision not in PRECISIONS:
        raise UsageError(
            f"unknown ONNX precision '{precision}'", hint="choose one of: " + ", ".join(PRECISIONS)
        )
    if precision in ("fp32", "fp16"):
        width = 4 if precision == "fp32" else 2
        return kept_tensor_bytes(arch, width) + sum(t.total_numel for t in linear_tensors(arch)) * width
    bits = 4 if precision == "int4" else 8
    total = 0
    for t in linear_tensors(arch):
        out_f, in_f = t.shape
        total += (out_f * in_f * bits // 8 + out_f * (in_f // block_size) * 4) * t.count
    emb = arch.vocab_size * arch.hidden_size
    total += kept_tensor_bytes(arch, 4) - (emb * 4 if not arch.tie_word_embeddings else 0)
    # the lm_head as MatMulNBits (tied models get a quantised copy of the embedding)
    total += emb * bits // 8 + arch.vocab_size * (arch.hidden_size // block_size) * 4
    return total


class ONNXFormat(QuantFormat):
    name = "onnx"
    extra = "onnx"
    runtime = "onnxruntime"
    table_types = ("int4", "int8")

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        size = onnx_bytes(arch, variant.lower())
        params = sum(t.total_numel for t in linear_tensors(arch)) + kept_tensor_bytes(arch, 1)
        # the builder holds the fp32 weights of the source and the graph it writes
        return SizeEstimate(size, int(4 * params + size + 1.0 * GiB))


FORMAT = ONNXFormat()
