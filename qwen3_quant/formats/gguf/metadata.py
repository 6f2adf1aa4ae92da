"""GGUF key/values for a Qwen3 / Qwen3-MoE checkpoint: the hyper-parameters llama.cpp reads for
``qwen3`` / ``qwen3moe`` and the ``general.*`` description of the model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...catalog.architecture import size_label
from ...checkpoint import CheckpointInfo
from ...errors import CheckpointError

ARCH_NAMES = {"qwen3": "qwen3", "qwen3_moe": "qwen3moe"}
GGML_QUANT_VERSION = 2
QUANTIZED_BY = "qwen3-quant"


@dataclass(frozen=True)
class ModelDescription:
    """What ``general.*`` says about the model."""

    name: str
    basename: str
    size_label: str
    finetune: str | None = None
    license: str | None = None
    base_models: tuple[dict[str, str], ...] = ()
    source_url: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


def _readme_license(folder: Path) -> str | None:
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    m = re.search(r"^license:\s*['\"]?([\w.\-]+)", front, re.MULTILINE)
    return m.group(1) if m else None


def describe(source, info: CheckpointInfo) -> ModelDescription:
    """Name, size label, license and lineage from the model source (catalog, Hub id or folder)."""
    from ...catalog import catalog

    entry = catalog().get(source.catalog_name) if getattr(source, "catalog_name", None) else None
    name = str(source.name)
    basename = name.split("-")[0] or name
    finetune = "Base" if getattr(source, "is_base", False) else None
    license_ = entry.license if entry else _readme_license(info.path)
    hub_id = getattr(source, "hub_id", None)
    base: dict[str, str] = {"name": name.replace("-", " ")}
    url = None
    if hub_id:
        url = f"https://huggingface.co/{hub_id}"
        base.update(organization=hub_id.split("/")[0], repo_url=url)
    return ModelDescription(
        name=name.replace("-", " "),
        basename=basename,
        size_label=size_label(info.arch),
        finetune=finetune,
        license=license_,
        base_models=(base,),
        source_url=url,
    )


def check_supported(info: CheckpointInfo) -> None:
    """Refuse what llama.cpp's qwen3 / qwen3moe graphs cannot run, before writing anything."""
    a = info.arch
    if a.is_moe:
        dense = [i for i in range(a.num_hidden_layers) if not a.layer_is_sparse(i)]
        if dense:
            raise CheckpointError(
                f"{info.path.name}: layer {dense[0]} is dense in a Qwen3-MoE model",
                hint="llama.cpp's qwen3moe runs MoE layers only (decoder_sparse_step 1, no mlp_only_layers)",
            )
        if not a.norm_topk_prob:
            raise CheckpointError(
                f"{info.path.name}: norm_topk_prob is false",
                hint="llama.cpp's qwen3moe always renormalises the top-k routing weights",
            )


def _rope(cfg: dict) -> dict[str, Any]:
    """The rope scaling block, in transformers 5 (``rope_parameters``) or 4 (``rope_scaling``) spelling."""
    text = cfg.get("text_config") or cfg
    params = dict(text.get("rope_scaling") or {})
    params.update(text.get("rope_parameters") or {})
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params["type"]
    return params


def add_model_metadata(w, info: CheckpointInfo, desc: ModelDescription, *, file_type: int) -> None:
    """Write ``general.*`` and every hyper-parameter llama.cpp reads for this architecture."""
    import gguf

    a = info.arch
    check_supported(info)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(desc.name)
    w.add_basename(desc.basename)
    if desc.finetune:
        w.add_finetune(desc.finetune)
    w.add_size_label(desc.size_label)
    if desc.license:
        w.add_license(desc.license)
    w.add_quantized_by(QUANTIZED_BY)
    if desc.source_url:
        w.add_source_url(desc.source_url)
    if desc.base_models:
        w.add_base_model_count(len(desc.base_models))
        for i, b in enumerate(desc.base_models):
            w.add_base_model_name(i, b["name"])
            if b.get("organization"):
                w.add_base_model_organization(i, b["organization"])
            if b.get("repo_url"):
                w.add_base_model_repo_url(i, b["repo_url"])

    w.add_block_count(a.num_hidden_layers)
    w.add_context_length(a.max_position_embeddings)
    w.add_embedding_length(a.hidden_size)
    w.add_feed_forward_length(a.intermediate_size)
    w.add_head_count(a.num_attention_heads)
    w.add_head_count_kv(a.num_key_value_heads)
    w.add_key_length(a.head_dim)
    w.add_value_length(a.head_dim)
    w.add_rope_freq_base(a.rope_theta)
    w.add_layer_norm_rms_eps(a.rms_norm_eps)
    if a.is_moe:
        w.add_expert_count(a.num_experts)
        w.add_expert_used_count(a.num_experts_per_tok)
        w.add_expert_feed_forward_length(a.moe_intermediate_size)
    rope = _rope(info.config)
    if rope.get("rope_type") == "yarn" and rope.get("factor"):
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        orig = rope.get("original_max_position_embeddings") or a.max_position_embeddings
        w.add_rope_scaling_orig_ctx_len(int(orig))
        for key, add in (
            ("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
            ("attention_factor", w.add_rope_scaling_yarn_attn_factor),
            ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
            ("beta_slow", w.add_rope_scaling_yarn_beta_slow),
        ):
            if rope.get(key) is not None:
                add(float(rope[key]))
    elif rope.get("rope_type") not in (None, "default"):
        raise CheckpointError(
            f"{info.path.name}: rope scaling '{rope.get('rope_type')}' is not one Qwen3 uses",
            hint="Qwen3 checkpoints use the default rope or YaRN",
        )
    _add_sampling(w, info.path)
    w.add_file_type(file_type)
    w.add_quantization_version(GGML_QUANT_VERSION)


def _add_sampling(w, folder: Path) -> None:
    """The generation config's recommended sampling, which llama.cpp tools take as defaults."""
    f = folder / "generation_config.json"
    if not f.is_file():
        return
    gen = json.loads(f.read_text())
    if not gen.get("do_sample"):
        return
    if gen.get("top_k") is not None:
        w.add_sampling_top_k(int(gen["top_k"]))
    if gen.get("top_p") is not None:
        w.add_sampling_top_p(float(gen["top_p"]))
    if gen.get("temperature") is not None:
        w.add_sampling_temp(float(gen["temperature"]))
