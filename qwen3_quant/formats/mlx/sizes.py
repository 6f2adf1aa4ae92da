"""Size of an MLX artifact's safetensors from tensor shapes alone.

mlx-lm's affine quantisation (``mx.quantize``) stores each quantised matrix as packed ``uint32``
words (``bits`` per weight) plus one scale and one bias per group of ``group_size`` weights, in the
model's dtype (bfloat16 here). Quantised: every linear layer, the embedding and a separate lm_head;
a Qwen3-MoE router at 8 bits, group 64 (mlx-lm's Qwen3-MoE rule). Kept in bfloat16: the norms.
Mixed recipes follow mlx-lm's ``mixed_quant_predicate_builder``: the lm_head, and v_proj and
down_proj in the first and last eighth of the layers and every third layer between, get the high
width. Checked against files written by mlx-lm in tests/test_mlx_format.py.
"""

from __future__ import annotations

from ...catalog.architecture import ArchShape, iter_tensors
from .config import RECIPES, MLXConfig

SCALE_BYTES = 2  # bfloat16 scales and biases
KEPT_BYTES = 2  # bfloat16 norms
ROUTER_BITS, ROUTER_GROUP = 8, 64
# config.json, chat template, index, and tokenizer.json, whose size follows the vocabulary:
# 0.55 MB for the micro models' 8192 tokens, 11.4 MB for Qwen3's 151669 (about 70 bytes a token)
METADATA_BASE_BYTES = 50_000
TOKENIZER_BYTES_PER_TOKEN = 75


def quantised_bytes(numel: int, bits: int, group: int) -> int:
    return numel * bits // 8 + 2 * (numel // group) * SCALE_BYTES


def uses_more_bits(layer: int, layers: int) -> bool:
    """mlx-lm's mixed recipes: the layers whose v_proj and down_proj get the high width."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_bits(role: str, layer: int, arch: ArchShape, cfg: MLXConfig) -> tuple[int, int] | None:
    """(bits, group) for a tensor, ``None`` for one kept unquantised."""
    if role == "router":
        return ROUTER_BITS, ROUTER_GROUP
    if role not in ("embed", "lm_head", "attn_q", "attn_k", "attn_v", "attn_o") and not role.startswith(
        ("ffn_", "expert_")
    ):
        return None
    if role == "ffn_norm":
        return None
    if cfg.recipe:
        lo, hi = RECIPES[cfg.recipe]
        if role == "lm_head":
            return hi, cfg.group_size
        more = layer >= 0 and uses_more_bits(layer, arch.num_hidden_layers)
        if more and role in ("attn_v", "ffn_down", "expert_down"):
            return hi, cfg.group_size
        return lo, cfg.group_size
    return cfg.bits, cfg.group_size


def weights_bytes(arch: ArchShape, cfg: MLXConfig) -> int:
    """Bytes of the model's tensors in the safetensors file(s)."""
    total = 0
    for t in iter_tensors(arch, stacked=True):
        q = tensor_bits(t.role, t.layer, arch, cfg)
        if q is None or t.shape[-1] % q[1]:
            total += t.total_numel * KEPT_BYTES
        else:
            total += quantised_bytes(t.numel, *q) * t.count
    return total


def mlx_bytes(arch: ArchShape, cfg: MLXConfig) -> int:
    """Bytes of the whole artifact: weights and the metadata files beside them."""
    return weights_bytes(arch, cfg) + METADATA_BASE_BYTES + TOKENIZER_BYTES_PER_TOKEN * arch.vocab_size
