"""Give a trained Qwen3 checkpoint salient channels without changing what it computes.

Real LLMs have a few input channels with very large activations ("massive activations"); their
weight columns carry most of the 4-bit rounding error, which is what activation-aware methods
(AWQ, GPTQ, the GGUF importance matrix) protect and plain round-to-nearest does not. The micro
models are too small to grow them, so they are given them exactly:

- an RMSNorm weight channel is multiplied by ``s`` and the matching input columns of every
  projection that reads that norm (q/k/v, gate/up, the MoE router and every expert) divided by ``s``;
- v_proj output rows are multiplied by ``s`` and the o_proj input columns that read them (one per
  query head of the group, GQA) divided by ``s``;
- up_proj output rows are multiplied by ``s`` and the matching down_proj input columns divided by ``s``.

Each pair cancels exactly in real arithmetic; with ``s`` a power of two it also cancels exactly in
binary floating point (scaling by 2^k is exact away from overflow), so the logits do not change.
Pure maths on a name -> tensor mapping; the script ``scripts/salient_channels.py`` loads and saves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class SalientPlan:
    """Which channels get which scale. Channels are the same in every layer, like real LLMs' massive
    activations, which sit in a few fixed hidden dimensions."""

    hidden_channels: tuple[int, ...]
    hidden_scale: float
    v_rows: tuple[int, ...]
    v_scale: float
    ffn_rows: tuple[int, ...]
    ffn_scale: float
    norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    notes: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        rec = asdict(self)
        for k, v in rec.items():
            if isinstance(v, tuple):
                rec[k] = list(v)
        return rec


def _check_power_of_two(s: float) -> None:
    if s <= 0 or not math.log2(s).is_integer():
        raise ValueError(f"scale {s} is not a power of two: the rescaling would not be exact")


def scale_norm_channels(
    norm_w: torch.Tensor, readers: Sequence[torch.Tensor], channels: Sequence[int], s: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Norm weight channel ``c`` times ``s``; column ``c`` of every reader ``[out, in]`` divided by ``s``."""
    _check_power_of_two(s)
    idx = torch.as_tensor(list(channels), dtype=torch.long)
    new_norm = norm_w.clone()
    new_norm[idx] = norm_w[idx] * s
    out = []
    for w in readers:
        if w.shape[1] != norm_w.shape[0]:
            raise ValueError(
                f"reader of shape {tuple(w.shape)} does not read a norm of size {norm_w.shape[0]}"
            )
        w2 = w.clone()
        w2[:, idx] = w[:, idx] / s
        out.append(w2)
    return new_norm, out


def scale_rows_into_columns(
    producer: torch.Tensor, consumer: torch.Tensor, rows: Sequence[int], columns: Sequence[int], s: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output rows of ``producer`` times ``s``; the ``consumer`` input columns that read them divided by ``s``."""
    _check_power_of_two(s)
    r = torch.as_tensor(list(rows), dtype=torch.long)
    c = torch.as_tensor(list(columns), dtype=torch.long)
    p2, c2 = producer.clone(), consumer.clone()
    p2[r] = producer[r] * s
    c2[:, c] = consumer[:, c] / s
    return p2, c2


def o_proj_columns_for_v_rows(
    v_rows: Sequence[int], head_dim: int, n_heads: int, n_kv_heads: int
) -> list[int]:
    """o_proj input columns fed by the given v_proj output rows: every query head of the row's KV group."""
    group = n_heads // n_kv_heads
    cols = []
    for r in v_rows:
        kv, d = divmod(r, head_dim)
        if kv >= n_kv_heads:
            raise ValueError(f"v_proj row {r} is outside {n_kv_heads} KV heads of {head_dim}")
        cols += [(kv * group + g) * head_dim + d for g in range(group)]
    return cols


def _num_experts(config: Mapping[str, Any]) -> int:
    return int(config.get("num_experts") or config.get("num_local_experts") or 0)


def apply_salient_plan(
    state: Mapping[str, torch.Tensor], config: Mapping[str, Any], plan: SalientPlan
) -> dict[str, torch.Tensor]:
    """Return a new state dict with ``plan`` applied to every layer (tensors not touched are shared)."""
    out = dict(state)
    n_layers = int(config["num_hidden_layers"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    n_heads, n_kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    n_experts = _num_experts(config)
    o_cols = o_proj_columns_for_v_rows(plan.v_rows, head_dim, n_heads, n_kv)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        attn = [f"{p}self_attn.{x}_proj.weight" for x in ("q", "k", "v")]
        if n_experts:
            experts = [f"{p}mlp.experts.{e}." for e in range(n_experts)]
            mlp_readers = [f"{p}mlp.gate.weight"] + [
                f"{e}{x}_proj.weight" for e in experts for x in ("gate", "up")
            ]
            ffn_pairs = [(f"{e}up_proj.weight", f"{e}down_proj.weight") for e in experts]
        else:
            mlp_readers = [f"{p}mlp.gate_proj.weight", f"{p}mlp.up_proj.weight"]
            ffn_pairs = [(f"{p}mlp.up_proj.weight", f"{p}mlp.down_proj.weight")]
        readers_of = {"input_layernorm": attn, "post_attention_layernorm": mlp_readers}
        for norm in plan.norms:
            names = readers_of[norm]
            new_norm, new_readers = scale_norm_channels(
                out[f"{p}{norm}.weight"], [out[n] for n in names], plan.hidden_channels, plan.hidden_scale
            )
            out[f"{p}{norm}.weight"] = new_norm
            out.update(zip(names, new_readers, strict=True))
        if plan.v_rows:
            v, o = f"{p}self_attn.v_proj.weight", f"{p}self_attn.o_proj.weight"
            out[v], out[o] = scale_rows_into_columns(out[v], out[o], plan.v_rows, o_cols, plan.v_scale)
        if plan.ffn_rows:
            for up, down in ffn_pairs:
                out[up], out[down] = scale_rows_into_columns(
                    out[up], out[down], plan.ffn_rows, plan.ffn_rows, plan.ffn_scale
                )
    return out


def seeded_plan(
    config: Mapping[str, Any],
    *,
    seed: int,
    hidden_channels: int,
    hidden_scale: float,
    v_rows: int,
    v_scale: float,
    ffn_rows: int,
    ffn_scale: float,
) -> SalientPlan:
    """Channels drawn without replacement by a seeded generator (the same on every machine)."""
    g = torch.Generator().manual_seed(seed)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // config["num_attention_heads"])
    v_size = head_dim * int(config["num_key_value_heads"])
    ffn = int(config.get("moe_intermediate_size") if _num_experts(config) else config["intermediate_size"])

    def draw(n: int, k: int) -> tuple[int, ...]:
        return tuple(sorted(int(x) for x in torch.randperm(n, generator=g)[:k]))

    return SalientPlan(
        hidden_channels=draw(hidden, hidden_channels),
        hidden_scale=hidden_scale,
        v_rows=draw(v_size, v_rows),
        v_scale=v_scale,
        ffn_rows=draw(ffn, ffn_rows),
        ffn_scale=ffn_scale,
    )
