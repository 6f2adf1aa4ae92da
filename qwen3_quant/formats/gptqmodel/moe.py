"""Qwen3-MoE expert coverage: how many calibration tokens the router sends to each expert.

GPTQ and AWQ calibrate an expert only on the tokens routed to it. An expert that few tokens reach
(a *starved* expert) gets a poor Hessian or scale search. :class:`RouterTally` hooks every router
(``mlp.gate``) and counts its selections with the model's own top-k and ``norm_topk_prob``;
:func:`count_routed_tokens_layerwise` runs the unquantised model over the calibration set a decoder
layer at a time with it (what the worker uses), :func:`count_routed_tokens` a whole loaded model;
:class:`RoutingStats` holds the counts and says which experts fall below the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import Qwen3QuantError


class StarvedExpertsError(Qwen3QuantError):
    """Experts below the calibration threshold with ``--starved-experts fail``."""


@dataclass
class RoutingStats:
    layers: list[int]  # decoder layer index of each MoE layer
    counts: np.ndarray  # [moe layers, experts] calibration tokens routed to each expert
    weight: np.ndarray  # [moe layers, experts] summed routing weight (after norm_topk_prob)
    tokens: int  # calibration tokens that went through each layer
    top_k: int
    threshold: float  # an expert routed fewer tokens than this is starved
    threshold_spec: str = ""
    starved_list: list[tuple[int, int, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.weight = np.asarray(self.weight, dtype=np.float64)
        self.starved_list = [
            (self.layers[i], int(e), int(self.counts[i, e]))
            for i, e in zip(*np.nonzero(self.counts < self.threshold), strict=True)
        ]

    @property
    def num_experts(self) -> int:
        return int(self.counts.shape[1]) if self.counts.ndim == 2 else 0

    def starved(self) -> list[tuple[int, int, int]]:
        """``(layer, expert, tokens)`` of every expert below the threshold, by layer then expert."""
        return list(self.starved_list)

    def describe_starved(self, limit: int = 5) -> str:
        items = [f"layer {layer} expert {e} ({n} tokens)" for layer, e, n in self.starved_list[:limit]]
        more = len(self.starved_list) - limit
        return ", ".join(items) + (f" and {more} more" if more > 0 else "")

    def summary(self) -> dict[str, Any]:
        c = self.counts
        per_layer = [
            {
                "layer": layer,
                "min": int(row.min()),
                "median": float(np.median(row)),
                "max": int(row.max()),
                "starved": int((row < self.threshold).sum()),
            }
            for layer, row in zip(self.layers, c, strict=True)
        ]
        return {
            "tokens_per_layer": self.tokens,
            "top_k": self.top_k,
            "experts": self.num_experts,
            "moe_layers": len(self.layers),
            "expected_per_expert": self.tokens * self.top_k / max(1, self.num_experts),
            "min": int(c.min()) if c.size else 0,
            "median": float(np.median(c)) if c.size else 0.0,
            "max": int(c.max()) if c.size else 0,
            "threshold_tokens": self.threshold,
            "threshold": self.threshold_spec,
            "starved": [{"layer": layer, "expert": e, "tokens": n} for layer, e, n in self.starved_list],
            "per_layer": per_layer,
            "counts": {str(layer): row.tolist() for layer, row in zip(self.layers, c, strict=True)},
        }

    @classmethod
    def from_summary(cls, d: dict[str, Any]) -> RoutingStats:
        layers = [int(k) for k in d["counts"]]
        counts = np.array([d["counts"][str(k)] for k in layers])
        return cls(
            layers,
            counts,
            np.zeros_like(counts, dtype=float),
            d["tokens_per_layer"],
            d["top_k"],
            d["threshold_tokens"],
            d.get("threshold", ""),
        )


def routers(model) -> list[tuple[int, Any]]:
    """``(layer index, router module)`` of every sparse layer of a Qwen3-MoE transformers model."""
    out = []
    for i, layer in enumerate(model.model.layers):
        mlp = getattr(layer, "mlp", None)
        if mlp is not None and hasattr(mlp, "gate") and hasattr(mlp, "experts"):
            out.append((i, mlp.gate))
    return out


def _selection(output, top_k: int, norm_topk_prob: bool):
    """Selected experts and their routing weights from a router's output: transformers 5 routers
    return ``(logits, weights, indices)``; a plain linear gate returns logits."""
    import torch

    if isinstance(output, tuple) and len(output) >= 3:
        return output[2], output[1]
    probs = torch.softmax(output.float(), dim=-1)
    w, idx = torch.topk(probs, top_k, dim=-1)
    if norm_topk_prob:
        w = w / w.sum(dim=-1, keepdim=True)
    return idx, w


class RouterTally:
    """Per-expert token counts and summed routing weights, filled by forward hooks on routers.

    ``hook(layer)`` is a forward hook for the router of decoder layer ``layer``; :meth:`stats`
    orders the layers seen. The same tally serves a whole model and a layer-at-a-time pass.
    """

    def __init__(self, n_experts: int, top_k: int, norm_topk_prob: bool):
        self.n_experts, self.top_k, self.norm = n_experts, top_k, norm_topk_prob
        self.counts: dict[int, np.ndarray] = {}
        self.weight: dict[int, np.ndarray] = {}

    @classmethod
    def for_config(cls, cfg) -> RouterTally:
        n_exp = int(getattr(cfg, "num_experts", 0) or getattr(cfg, "num_local_experts", 0))
        return cls(n_exp, int(cfg.num_experts_per_tok), bool(getattr(cfg, "norm_topk_prob", True)))

    def hook(self, layer: int):
        import torch

        counts = self.counts.setdefault(layer, np.zeros(self.n_experts, dtype=np.int64))
        weight = self.weight.setdefault(layer, np.zeros(self.n_experts, dtype=np.float64))

        def record(_mod, _inp, out):
            idx, w = _selection(out, self.top_k, self.norm)
            idx = idx.reshape(-1).to(torch.int64)
            counts[:] += torch.bincount(idx, minlength=self.n_experts).cpu().numpy()
            weight[:] += (
                torch.zeros(self.n_experts, dtype=torch.float64, device=idx.device)
                .index_add_(0, idx, w.reshape(-1).to(torch.float64))
                .cpu()
                .numpy()
            )

        return record

    def stats(self, tokens: int, threshold: float, threshold_spec: str = "") -> RoutingStats:
        layers = sorted(self.counts)
        shape = (len(layers), self.n_experts)
        counts = np.array([self.counts[i] for i in layers]).reshape(shape)
        weight = np.array([self.weight[i] for i in layers]).reshape(shape)
        return RoutingStats(layers, counts, weight, tokens, self.top_k, threshold, threshold_spec)


def count_routed_tokens(
    model,
    samples: Sequence[Sequence[int]],
    *,
    threshold: float,
    threshold_spec: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> RoutingStats:
    """Forward every calibration sample through a whole transformers ``model`` and count, per
    layer, the tokens its router sends to each expert."""
    import torch

    tally = RouterTally.for_config(model.config)
    handles = [gate.register_forward_hook(tally.hook(i)) for i, gate in routers(model)]
    tokens = 0
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for i, ids in enumerate(samples):
                model(input_ids=torch.tensor([list(ids)], dtype=torch.long, device=device), use_cache=False)
                tokens += len(ids)
                if progress:
                    progress(i + 1, len(samples))
    finally:
        for h in handles:
            h.remove()
    return tally.stats(tokens, threshold, threshold_spec)


def count_routed_tokens_layerwise(
    info,
    samples: Sequence[Sequence[int]],
    *,
    threshold: float,
    threshold_spec: str = "",
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> RoutingStats:
    """:func:`count_routed_tokens` a decoder layer at a time (:class:`~qwen3_quant.layerwise.LayerwiseModel`,
    layers in bf16 as the whole-model pass loads them, computed on ``device``): memory is one layer
    plus every sample's hidden states, not the model. ``info`` is the checkpoint's
    :class:`~qwen3_quant.checkpoint.CheckpointInfo`."""
    from ...layerwise import LayerwiseModel

    lw = LayerwiseModel(info, dtype="bfloat16", device=device)
    tally = RouterTally.for_config(lw.config)

    def on_layer(layer, li: int):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not (hasattr(mlp, "gate") and hasattr(mlp, "experts")):
            return None
        return mlp.gate.register_forward_hook(tally.hook(li)).remove

    hidden = lw.embed([list(s) for s in samples])
    lw.run_layers(
        hidden,
        on_layer=on_layer,
        progress=(lambda _label, d, t: progress(d, t)) if progress else None,
        label="counting routed tokens",
    )
    return tally.stats(sum(len(s) for s in samples), threshold, threshold_spec)
