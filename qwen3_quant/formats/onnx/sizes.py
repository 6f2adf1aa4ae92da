"""Size of the ONNX files (model.onnx + model.onnx.data) the builder writes, from tensor shapes alone.

What the files hold, by precision (checked against real builds in tests/test_onnx_parity.py):

- fp32 / fp16: every weight at that width, a tied embedding once (the lm_head reads it transposed);
  MoE layers add zero expert biases; rotary cos/sin caches of ``max_position_embeddings`` rows.
- int4 / int8: every linear layer and the lm_head as MatMulNBits (packed ints plus one fp32 scale per
  block); the embedding as GatherBlockQuantized blocks of the same kind (a tied one reads the
  lm_head's matrix, stored once); MoE experts as QMoE (packed ints, fp32 block scales, fp32 zero
  biases); router and norms fp32.
"""

from __future__ import annotations

from ...catalog.architecture import EXPERT_ROLES, ArchShape, iter_tensors
from ...errors import UsageError
from .config import BITS, PRECISIONS

# model.onnx (the graph without its weights): measured 25-47 KB for 2-4 layers
GRAPH_BYTES_BASE = 4_000
GRAPH_BYTES_PER_LAYER = 10_500


def _matmul_nbits_bytes(out_f: int, in_f: int, bits: int, block: int) -> int:
    blocks = -(-in_f // block)
    return out_f * blocks * (block * bits // 8) + out_f * blocks * 4


def onnx_bytes(arch: ArchShape, precision: str, block_size: int = 32) -> int:
    """Bytes of ``model.onnx`` + ``model.onnx.data`` for ``precision`` (fp32, fp16, int8, int4)."""
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise UsageError(
            f"unknown ONNX precision '{precision}'", hint="choose one of: " + ", ".join(PRECISIONS)
        )
    bits = BITS[precision]
    quantised = precision in ("int4", "int8")
    block = block_size if precision == "int4" else 32
    width = 4 if quantised else bits // 8
    total = GRAPH_BYTES_BASE + GRAPH_BYTES_PER_LAYER * arch.num_hidden_layers  # model.onnx itself
    total += 2 * arch.max_position_embeddings * (arch.head_dim // 2) * width  # cos/sin caches
    for t in iter_tensors(arch, stacked=True):
        if t.role in EXPERT_ROLES:
            out_f, in_f = t.shape
            if quantised:
                total += _matmul_nbits_bytes(out_f, in_f, bits, block) * t.count
            else:
                total += t.total_numel * width
            # the MoE op takes zero biases: [E, 2 * moe_intermediate] for gate_up, [E, hidden] for down
            total += t.count * out_f * width
        elif t.role == "embed":
            vocab, hidden = t.shape
            if not quantised:
                total += t.numel * width
            else:  # GatherBlockQuantized (a tied model's lm_head reads the same matrix)
                total += _matmul_nbits_bytes(vocab, hidden, bits, block)
        elif t.role == "router" or len(t.shape) == 1 or not quantised:
            total += t.numel * width
        else:  # attention, dense MLP, lm_head
            out_f, in_f = t.shape
            total += _matmul_nbits_bytes(out_f, in_f, bits, block)
    return total


# Peak host memory of the export (formats/onnx/stream.py: a decoder layer at a time), measured on the
# Qwen3-0.6B shape at 28 and 56 layers and on the micro models (benchmarks/memory.md)
# torch, transformers, onnx, onnxruntime and the builder, imported: 0.43 GB of VmHWM in the development
# environment, 0.49 GB in a fresh install of the same versions (CI's clean clone); the larger, with margin
LIBRARIES_BYTES = 560_000_000
# one decoder layer: its weights in the checkpoint's dtype, each initialiser in fp32 as it is made
# and quantised or written, the builder's QMoE stacks; about 3 fp32 copies of the layer at once
LAYER_BYTES_PER_PARAM = 12
QUANTISER_CHUNK_BYTES = 32 << 20  # fp32 bytes of a large weight converted or quantised at a time


def export_peak_bytes(arch: ArchShape, precision: str, block_size: int = 32) -> int:
    """Peak host memory of building the ONNX model: the libraries plus the larger of one decoder
    layer and the output head (read whole in the checkpoint's bf16, converted a chunk of rows at a
    time; int4/int8 also hold its packed result, counted twice here for margin). Measured on the
    Qwen3-0.6B shape at 28 and 56 layers: int4 1.02 GB, int8 1.09 GB; fp32 0.88 GB at 28."""
    from ..base import largest_layer_params

    precision = precision.lower()
    bits = BITS[precision]
    head = arch.vocab_size * arch.hidden_size
    if precision in ("int4", "int8"):
        block = block_size if precision == "int4" else 32
        head_phase = 2 * head + 2 * _matmul_nbits_bytes(arch.vocab_size, arch.hidden_size, bits, block)
        head_phase += 4 * QUANTISER_CHUNK_BYTES
    else:
        head_phase = 2 * head + 6 * QUANTISER_CHUNK_BYTES
    return LIBRARIES_BYTES + max(LAYER_BYTES_PER_PARAM * largest_layer_params(arch), head_phase)
