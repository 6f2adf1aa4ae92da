"""The data behind ``qwen3-quant models``: shapes, parameter counts and size estimates per format."""

from __future__ import annotations

from typing import Any

from .catalog import catalog
from .formats import FORMATS, get_format


def model_rows() -> list[dict[str, Any]]:
    rows = []
    for name, e in catalog().items():
        a, pc = e.arch, e.params
        rows.append(
            {
                "name": name,
                "hub_id": e.hub_id,
                "base_hub_id": e.base_hub_id,
                "model_type": a.model_type,
                "layers": a.num_hidden_layers,
                "hidden_size": a.hidden_size,
                "attention_heads": a.num_attention_heads,
                "kv_heads": a.num_key_value_heads,
                "head_dim": a.head_dim,
                "intermediate_size": a.intermediate_size,
                "experts": a.num_experts or None,
                "experts_per_token": a.num_experts_per_tok or None,
                "expert_intermediate_size": a.moe_intermediate_size or None,
                "vocab_size": a.vocab_size,
                "tied_embeddings": a.tie_word_embeddings,
                "native_context": e.native_context,
                "yarn_context": e.yarn_context,
                "params_total": pc.total,
                "params_active": pc.active,
                "params_non_embedding": pc.non_embedding,
                "license": e.license,
            }
        )
    return rows


def estimate_rows(formats: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per (format, type, model): estimated artifact bytes, peak host bytes to quantise,
    peak GPU bytes to quantise on CUDA (``None`` where the format's quantisation uses no GPU), and
    peak bytes to validate with the default evaluation options."""
    from .working_set import validation_estimate

    rows = []
    for fname in formats or list(FORMATS):
        fmt = get_format(fname)
        for variant in fmt.table_types:
            for name, e in catalog().items():
                est = fmt.estimate(e.arch, variant)
                rows.append(
                    {
                        "format": fname,
                        "type": variant,
                        "model": name,
                        "artifact_bytes": est.artifact_bytes,
                        "quantise_peak_bytes": est.quantise_peak_bytes,
                        "gpu_peak_bytes": est.gpu_peak_bytes,
                        "validate_peak_bytes": validation_estimate(fmt, e.arch, variant),
                    }
                )
    return rows
