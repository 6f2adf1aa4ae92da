"""Shape-faithful tiny variants of the eight Qwen3 models, built from the catalog in seconds.

What is kept from the real model: the architecture class, head_dim (128), the GQA ratio, tied or
separate embeddings, rope theta, RMS eps, and for MoE the router + experts layout with
``norm_topk_prob`` and ``decoder_sparse_step``. What is scaled down: layers, hidden size,
heads (ratio kept), feed-forward sizes, expert count and top-k, vocabulary (the bundled micro
tokenizer, 8192 embedding rows). Sizes stay multiples of 256 so every GGUF K-quant applies.
Random weights: they prove plumbing, not quality.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ..catalog import MICRO_DIR, catalog
from ..catalog.architecture import ArchShape

TOKENIZER_SOURCE = MICRO_DIR / "Qwen3-Micro"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
TINY_VOCAB = 8192


def tiny_arch(real: ArchShape, *, layers: int = 2, hidden: int = 256) -> ArchShape:
    ratio = real.gqa_ratio
    kv = 2 if ratio <= 4 else 1
    changes = dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=ratio * kv,
        num_key_value_heads=kv,
        intermediate_size=2 * hidden,
        vocab_size=TINY_VOCAB,
        max_position_embeddings=2048,
    )
    if real.is_moe:
        changes.update(
            num_experts=max(4, real.num_experts // 8),
            moe_intermediate_size=256,
            num_experts_per_tok=max(2, real.num_experts_per_tok // 2),
        )
    return dataclasses.replace(real, **changes)


def build_model(arch: ArchShape, out_dir: Path, *, seed: int = 0, dtype: str = "bfloat16") -> Path:
    """Save a randomly initialised checkpoint of ``arch`` with the micro tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir = Path(out_dir)
    tok_cfg = json.loads((TOKENIZER_SOURCE / "config.json").read_text())
    cfg_dict = arch.to_config()
    model_type = cfg_dict.pop("model_type")
    cfg_dict.pop("architectures")
    config = AutoConfig.for_model(
        model_type,
        bos_token_id=tok_cfg.get("bos_token_id"),
        eos_token_id=tok_cfg.get("eos_token_id"),
        **cfg_dict,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.to(getattr(torch, dtype)).save_pretrained(out_dir)
    for f in TOKENIZER_FILES:
        shutil.copy2(TOKENIZER_SOURCE / f, out_dir / f)
    return out_dir


def build_tiny(name: str, out_dir: Path, *, seed: int = 0, layers: int = 2) -> Path:
    """Tiny variant of catalog model ``name`` (e.g. ``Qwen3-30B-A3B``) saved under ``out_dir``."""
    entry = catalog()[name]
    return build_model(tiny_arch(entry.arch, layers=layers), out_dir, seed=seed)
