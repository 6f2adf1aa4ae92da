"""llama.cpp quantisation types and the per-tensor type mix each one picks, as data and pure functions.

The mix mirrors ``llama_tensor_get_type`` in llama.cpp's ``src/llama-quant.cpp`` for the
tensors a Qwen3 / Qwen3-MoE GGUF has, so that sizes can be estimated without llama.cpp and checked
against the files it writes (tests/test_catalog.py and tests/test_gguf_quantize.py compare the two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...catalog.architecture import ArchShape, iter_tensors


@dataclass(frozen=True)
class GGMLType:
    name: str
    block: int  # elements per block
    block_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.block_bytes / self.block

    def nbytes(self, numel: int) -> int:
        return numel // self.block * self.block_bytes


GGML_TYPES = {
    t.name: t
    for t in (
        GGMLType("F32", 1, 4),
        GGMLType("F16", 1, 2),
        GGMLType("BF16", 1, 2),
        GGMLType("Q4_0", 32, 18),
        GGMLType("Q4_1", 32, 20),
        GGMLType("Q5_0", 32, 22),
        GGMLType("Q5_1", 32, 24),
        GGMLType("Q8_0", 32, 34),
        GGMLType("Q2_K", 256, 84),
        GGMLType("Q3_K", 256, 110),
        GGMLType("Q4_K", 256, 144),
        GGMLType("Q5_K", 256, 176),
        GGMLType("Q6_K", 256, 210),
        GGMLType("IQ4_NL", 32, 18),
        GGMLType("IQ4_XS", 256, 136),
    )
}

# file type name -> (llama_ftype value, default ggml type)
FILE_TYPES: dict[str, tuple[int, str]] = {
    "F32": (0, "F32"),
    "F16": (1, "F16"),
    "BF16": (32, "BF16"),
    "Q8_0": (7, "Q8_0"),
    "Q6_K": (18, "Q6_K"),
    "Q5_K_M": (17, "Q5_K"),
    "Q5_K_S": (16, "Q5_K"),
    "Q5_0": (8, "Q5_0"),
    "Q5_1": (9, "Q5_1"),
    "Q4_K_M": (15, "Q4_K"),
    "Q4_K_S": (14, "Q4_K"),
    "Q4_0": (2, "Q4_0"),
    "Q4_1": (3, "Q4_1"),
    "IQ4_XS": (30, "IQ4_XS"),
    "IQ4_NL": (25, "IQ4_NL"),
    "Q3_K_L": (13, "Q3_K"),
    "Q3_K_M": (12, "Q3_K"),
    "Q3_K_S": (11, "Q3_K"),
    "Q2_K": (10, "Q2_K"),
}
UNQUANTISED = ("F32", "F16", "BF16")
# the types `qwen3-quant models` shows; any key of FILE_TYPES can be asked for
TABLE_TYPES = ("BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
# shape a tensor falls back to when its rows do not divide into the type's blocks
_FALLBACK = {
    "Q2_K": "Q4_0",
    "Q3_K": "Q4_0",
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
    "IQ4_XS": "IQ4_NL",
}

# our architecture roles -> llama.cpp tensor names (``blk.N.<name>.weight``)
GGUF_NAMES = {
    "embed": "token_embd",
    "lm_head": "output",
    "final_norm": "output_norm",
    "attn_norm": "attn_norm",
    "attn_q": "attn_q",
    "attn_k": "attn_k",
    "attn_v": "attn_v",
    "attn_o": "attn_output",
    "q_norm": "attn_q_norm",
    "k_norm": "attn_k_norm",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "ffn_gate",
    "ffn_up": "ffn_up",
    "ffn_down": "ffn_down",
    "router": "ffn_gate_inp",
    "expert_gate": "ffn_gate_exps",
    "expert_up": "ffn_up_exps",
    "expert_down": "ffn_down_exps",
}


def gguf_name(role: str, layer: int) -> str:
    base = GGUF_NAMES[role]
    return f"blk.{layer}.{base}.weight" if layer >= 0 else f"{base}.weight"


# role -> llama.cpp's tensor category in its type rules: the tensor's name, experts as their dense twin
_CATEGORY = {role: name.removesuffix("_exps") for role, name in GGUF_NAMES.items()}


def normalise_type(name: str) -> str:
    from .autotype import check_auto, is_auto

    if is_auto(name):
        return check_auto(name)
    key = name.strip().upper()
    if key not in FILE_TYPES:
        from ...errors import UsageError

        raise UsageError(
            f"unknown GGUF type '{name}'",
            hint="valid types: " + ", ".join(FILE_TYPES) + "; or auto:<bits>bpw / auto:<type> (sized mix)",
        )
    return key


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(
    ftype: str,
    category: str,
    *,
    layer: int,
    n_layer: int,
    n_expert: int,
    gqa: int,
    tied: bool,
    ncols: int,
    has_imatrix: bool = False,
) -> str:
    """The ggml type llama.cpp's quantiser gives one quantisable (2-D or 3-D) weight tensor."""
    default = FILE_TYPES[ftype][1]
    if default in UNQUANTISED:
        return default
    new = default
    if category == "output" or (tied and category == "token_embd"):
        if ncols % GGML_TYPES[new].block:
            new = "Q8_0"
        elif new != "Q8_0":
            new = "Q6_K"
    elif category == "attn_v":
        if ftype == "Q2_K":
            new = "Q4_K" if gqa >= 4 else "Q3_K"
        elif ftype == "Q3_K_M":
            new = "Q5_K" if layer < 2 else "Q4_K"
        elif ftype == "Q3_K_L" or ftype in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
            new = "Q5_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, n_layer):
            new = "Q6_K"
        elif ftype == "Q4_K_S" and layer < 4:
            new = "Q5_K"
        if n_expert == 8:
            new = "Q8_0"
    elif category == "attn_k":
        if n_expert == 8:
            new = "Q8_0"
    elif category == "ffn_down":
        if ftype == "Q2_K":
            new = "Q3_K"
        elif ftype == "Q3_K_M":
            new = "Q5_K" if layer < n_layer // 16 else "Q4_K"
        elif ftype == "Q3_K_L":
            new = "Q5_K"
        elif ftype == "Q4_K_M":
            if _use_more_bits(layer, n_layer):
                new = "Q6_K"
        elif layer < n_layer // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not has_imatrix:
            new = "Q5_K"
        elif ftype == "Q5_K_M" and _use_more_bits(layer, n_layer):
            new = "Q6_K"
        elif ftype == "Q4_K_S" and layer < n_layer // 8:
            new = "Q5_K"
        elif ftype in ("Q4_0", "Q5_0") and has_imatrix and layer < n_layer // 8:
            new = "Q4_1" if ftype == "Q4_0" else "Q5_1"
    elif category == "attn_output":
        if n_expert == 8:
            if ftype in ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ4_XS"):
                new = "Q5_K"
        elif ftype == "Q2_K":
            new = "Q3_K"
        elif ftype == "Q3_K_M":
            new = "Q4_K"
        elif ftype == "Q3_K_L":
            new = "Q5_K"
    if ncols % GGML_TYPES[new].block:
        new = _FALLBACK.get(new, new)
        if ncols % GGML_TYPES[new].block:
            new = "F16"
    return new


@dataclass(frozen=True)
class GGUFTensorPlan:
    name: str  # llama.cpp name
    shape: tuple[int, ...]  # numpy order (rows last dim = ncols)
    ggml_type: str

    @property
    def nbytes(self) -> int:
        return GGML_TYPES[self.ggml_type].nbytes(math.prod(self.shape))


def plan_tensors(a: ArchShape, ftype: str, *, has_imatrix: bool = False) -> list[GGUFTensorPlan]:
    """Every tensor of the GGUF file llama.cpp writes for ``ftype``, with llama.cpp's names.

    Experts are stacked per layer into one 3-D tensor, as llama.cpp stores them; norms and the
    router gate stay F32; tied models have no ``output.weight``.
    """
    ftype = normalise_type(ftype)
    out: list[GGUFTensorPlan] = []
    common = dict(
        n_layer=a.num_hidden_layers,
        n_expert=a.num_experts if a.is_moe else 0,
        gqa=a.gqa_ratio,
        tied=a.tie_word_embeddings,
        has_imatrix=has_imatrix,
    )
    for t in iter_tensors(a, stacked=True):
        name = gguf_name(t.role, t.layer)
        if len(t.shape) == 1 or t.role == "router":
            out.append(GGUFTensorPlan(name, t.shape, "F32"))
            continue
        shape = (a.num_experts, *t.shape) if t.expert == 0 else t.shape
        gtype = tensor_type(ftype, _CATEGORY[t.role], layer=max(t.layer, 0), ncols=t.shape[-1], **common)
        out.append(GGUFTensorPlan(name, shape, gtype))
    return out


def metadata_bytes(a: ArchShape, n_tensors: int) -> int:
    """Header, key/values and tensor infos. The tokenizer dominates: tokens, int32 types and merges
    take 39.0 bytes per embedding row with Qwen2/Qwen3's 151k BPE (measured on llama.cpp's
    ggml-vocab-qwen2.gguf) and 33.6 with the bundled 8k micro tokenizer; the chat template and the
    other keys about 8 KB; each tensor info about 60 bytes."""
    per_row = 39.0 if a.vocab_size > 32768 else 33.6
    return 8 * 1024 + int(per_row * a.vocab_size) + 60 * n_tensors


def estimate_file_size(a: ArchShape, ftype: str, *, has_imatrix: bool = False) -> int:
    from .autotype import parse_auto

    budget = parse_auto(ftype)
    if isinstance(budget, str):  # an automatic mix at most as large as that type's file
        return estimate_file_size(a, budget, has_imatrix=True)
    if budget is not None:
        plan = plan_tensors(a, "BF16")
        numel = sum(math.prod(p.shape) for p in plan)
        return int(budget * numel / 8) + 32 * len(plan) + metadata_bytes(a, len(plan))
    plan = plan_tensors(a, ftype, has_imatrix=has_imatrix)
    data = sum(-(-p.nbytes // 32) * 32 for p in plan)  # tensors are 32-byte aligned
    return data + metadata_bytes(a, len(plan))
