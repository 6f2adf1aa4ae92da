"""Qwen3 / Qwen3-MoE architecture as data: hyper-parameters -> every weight tensor, its shape and role.

One description serves parameter counts, artifact size estimates, checkpoint validation and the
tiny test models. Pure Python: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

MODEL_TYPES = ("qwen3", "qwen3_moe")


@dataclass(frozen=True)
class ArchShape:
    """The hyper-parameters that fix a Qwen3 / Qwen3-MoE model's tensors."""

    model_type: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    moe_intermediate_size: int = 0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = field(default_factory=tuple)
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 40960
    norm_topk_prob: bool = True

    @property
    def is_moe(self) -> bool:
        return self.model_type == "qwen3_moe" and self.num_experts > 0

    @property
    def gqa_ratio(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    def layer_is_sparse(self, i: int) -> bool:
        return (
            self.is_moe and i not in self.mlp_only_layers and (i + 1) % max(1, self.decoder_sparse_step) == 0
        )

    @classmethod
    def from_config(cls, cfg: dict) -> ArchShape:
        """Build from a config.json dict, reading both transformers 4 and 5 spellings."""
        text = cfg.get("text_config") or cfg
        rope = text.get("rope_parameters") or {}
        theta = rope.get("rope_theta", text.get("rope_theta", 1_000_000.0))
        heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        return cls(
            model_type=str(text.get("model_type", "")),
            num_hidden_layers=int(text["num_hidden_layers"]),
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            intermediate_size=int(text.get("intermediate_size") or 0),
            vocab_size=int(text["vocab_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            moe_intermediate_size=int(text.get("moe_intermediate_size") or 0),
            num_experts=int(text.get("num_experts") or text.get("num_local_experts") or 0),
            num_experts_per_tok=int(text.get("num_experts_per_tok") or 0),
            decoder_sparse_step=int(text.get("decoder_sparse_step") or 1),
            mlp_only_layers=tuple(text.get("mlp_only_layers") or ()),
            rope_theta=float(theta),
            rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(text.get("max_position_embeddings") or 40960),
            norm_topk_prob=bool(text.get("norm_topk_prob", True)),
        )

    def to_config(self) -> dict:
        """A transformers config.json body for these shapes."""
        cfg = {
            "architectures": [
                "Qwen3MoeForCausalLM" if self.model_type == "qwen3_moe" else "Qwen3ForCausalLM"
            ],
            "model_type": self.model_type,
            "num_hidden_layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
        }
        if self.model_type == "qwen3_moe":
            cfg.update(
                moe_intermediate_size=self.moe_intermediate_size,
                num_experts=self.num_experts,
                num_experts_per_tok=self.num_experts_per_tok,
                decoder_sparse_step=self.decoder_sparse_step,
                mlp_only_layers=list(self.mlp_only_layers),
                norm_topk_prob=self.norm_topk_prob,
            )
        return cfg


@dataclass(frozen=True)
class TensorSpec:
    """One weight tensor in Hugging Face naming (experts one tensor each, as on the Hub)."""

    name: str
    shape: tuple[int, ...]
    role: str  # embed, lm_head, attn_q/k/v/o, q_norm, k_norm, attn_norm, ffn_norm, ffn_gate/up/down,
    #            router, expert_gate/up/down, final_norm
    layer: int = -1
    expert: int = -1
    count: int = 1  # with stacked=True, one spec stands for all experts of a layer

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def total_numel(self) -> int:
        return self.count * math.prod(self.shape)


def iter_tensors(a: ArchShape, *, stacked: bool = False) -> Iterator[TensorSpec]:
    """Every weight tensor; with ``stacked`` each layer's experts come once per role (``count`` = experts)."""
    h, hd = a.hidden_size, a.head_dim
    yield TensorSpec("model.embed_tokens.weight", (a.vocab_size, h), "embed")
    for i in range(a.num_hidden_layers):
        p = f"model.layers.{i}."
        yield TensorSpec(p + "input_layernorm.weight", (h,), "attn_norm", i)
        yield TensorSpec(p + "self_attn.q_proj.weight", (a.num_attention_heads * hd, h), "attn_q", i)
        yield TensorSpec(p + "self_attn.k_proj.weight", (a.num_key_value_heads * hd, h), "attn_k", i)
        yield TensorSpec(p + "self_attn.v_proj.weight", (a.num_key_value_heads * hd, h), "attn_v", i)
        yield TensorSpec(p + "self_attn.o_proj.weight", (h, a.num_attention_heads * hd), "attn_o", i)
        yield TensorSpec(p + "self_attn.q_norm.weight", (hd,), "q_norm", i)
        yield TensorSpec(p + "self_attn.k_norm.weight", (hd,), "k_norm", i)
        yield TensorSpec(p + "post_attention_layernorm.weight", (h,), "ffn_norm", i)
        if a.layer_is_sparse(i):
            m = a.moe_intermediate_size
            yield TensorSpec(p + "mlp.gate.weight", (a.num_experts, h), "router", i)
            n = 1 if stacked else a.num_experts
            c = a.num_experts if stacked else 1
            for e in range(n):
                q = f"{p}mlp.experts.{e}."
                yield TensorSpec(q + "gate_proj.weight", (m, h), "expert_gate", i, e, c)
                yield TensorSpec(q + "up_proj.weight", (m, h), "expert_up", i, e, c)
                yield TensorSpec(q + "down_proj.weight", (h, m), "expert_down", i, e, c)
        else:
            f = a.intermediate_size
            yield TensorSpec(p + "mlp.gate_proj.weight", (f, h), "ffn_gate", i)
            yield TensorSpec(p + "mlp.up_proj.weight", (f, h), "ffn_up", i)
            yield TensorSpec(p + "mlp.down_proj.weight", (h, f), "ffn_down", i)
    yield TensorSpec("model.norm.weight", (h,), "final_norm")
    if not a.tie_word_embeddings:
        yield TensorSpec("lm_head.weight", (a.vocab_size, h), "lm_head")


EXPERT_ROLES = frozenset({"expert_gate", "expert_up", "expert_down"})
LINEAR_ROLES = (
    frozenset({"attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate", "ffn_up", "ffn_down"}) | EXPERT_ROLES
)


@dataclass(frozen=True)
class ParamCounts:
    total: int
    active: int
    embedding: int  # input embedding plus a separate lm_head

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def param_counts(a: ArchShape) -> ParamCounts:
    total = active = emb = 0
    for t in iter_tensors(a, stacked=True):
        total += t.total_numel
        if t.role in ("embed", "lm_head"):
            emb += t.numel
        # experts are alike in size: a token uses num_experts_per_tok of them
        active += t.numel * a.num_experts_per_tok if t.role in EXPERT_ROLES else t.numel
    return ParamCounts(total=total, active=active, embedding=emb)


def expected_tensors(a: ArchShape) -> dict[str, tuple[int, ...]]:
    return {t.name: t.shape for t in iter_tensors(a)}


def fused_expert_names(a: ArchShape) -> dict[str, tuple[int, ...]]:
    """transformers 5's fused expert layout (``mlp.experts.gate_up_proj`` / ``down_proj``)."""
    out: dict[str, tuple[int, ...]] = {}
    for i in range(a.num_hidden_layers):
        if a.layer_is_sparse(i):
            p = f"model.layers.{i}.mlp.experts."
            m, h = a.moe_intermediate_size, a.hidden_size
            out[p + "gate_up_proj"] = (a.num_experts, 2 * m, h)
            out[p + "down_proj"] = (a.num_experts, h, m)
    return out


def human_count(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}" if n / div < 100 else f"{n / div:.0f}{unit}"
    return str(int(n))


def size_label(a: ArchShape) -> str:
    """``8B``, ``30B-A3B``: the label Qwen and the GGUF ``general.size_label`` use."""
    pc = param_counts(a)

    def lab(n: int) -> str:
        for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if n >= div:
                v = n / div
                return (f"{v:.1f}".rstrip("0").rstrip(".") if v < 10 else f"{v:.0f}") + unit
        return str(n)

    return f"{lab(pc.total)}-A{lab(pc.active)}" if a.is_moe else lab(pc.total)
