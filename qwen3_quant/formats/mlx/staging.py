"""A checkpoint as mlx-lm reads it: the config with the Hub's Qwen3 key names, in a staging folder.

transformers 5 writes ``num_local_experts`` and ``rope_parameters.rope_theta`` where Qwen3's Hub
checkpoints (and mlx-lm's ``ModelArgs``) use ``num_experts`` and a top-level ``rope_theta``. The
staging folder holds the rewritten ``config.json`` and links to every other file of the
checkpoint, which is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ...errors import CheckpointError

SUPPORTED = {"Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3_moe"}
# the fields mlx-lm's ModelArgs of each model type cannot do without
REQUIRED = {
    "qwen3": (
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "num_attention_heads",
        "rms_norm_eps",
        "vocab_size",
        "num_key_value_heads",
        "max_position_embeddings",
        "rope_theta",
        "head_dim",
        "tie_word_embeddings",
    ),
    "qwen3_moe": (
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "num_attention_heads",
        "num_experts",
        "num_experts_per_tok",
        "decoder_sparse_step",
        "mlp_only_layers",
        "moe_intermediate_size",
        "rms_norm_eps",
        "vocab_size",
        "num_key_value_heads",
        "head_dim",
        "rope_theta",
        "tie_word_embeddings",
        "max_position_embeddings",
        "norm_topk_prob",
    ),
}
DEFAULTS = {"tie_word_embeddings": False, "mlp_only_layers": [], "decoder_sparse_step": 1}


def mlx_config(config: dict) -> dict:
    """``config`` with the key names mlx-lm reads; raises :class:`CheckpointError` for a model
    mlx-lm cannot run (another architecture, a field it needs missing)."""
    arch = (config.get("architectures") or [None])[0]
    if arch not in SUPPORTED:
        raise CheckpointError(
            f"MLX (mlx-lm) cannot run architecture {arch!r}",
            hint="--format mlx takes Qwen3ForCausalLM and Qwen3MoeForCausalLM checkpoints "
            "(config.json 'architectures')",
        )
    out = dict(config)
    out["model_type"] = SUPPORTED[arch]
    if "num_experts" not in out and "num_local_experts" in out:
        out["num_experts"] = out["num_local_experts"]
    rope = out.get("rope_parameters") or out.get("rope_scaling") or {}
    if "rope_theta" not in out and isinstance(rope, dict) and "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    if isinstance(rope, dict) and rope.get("rope_type", "default") not in ("default", None):
        out.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    if "head_dim" not in out and out.get("hidden_size") and out.get("num_attention_heads"):
        out["head_dim"] = out["hidden_size"] // out["num_attention_heads"]
    for k, v in DEFAULTS.items():
        out.setdefault(k, v)
    missing = [k for k in REQUIRED[out["model_type"]] if k not in out]
    if missing:
        raise CheckpointError(
            f"MLX (mlx-lm) cannot run this checkpoint: config.json has no {missing[0]}",
            hint="check the folder with `qwen3-quant check`",
        )
    return out


def stage_checkpoint(src: Path, dest: Path) -> Path:
    """Make ``dest``: links to ``src``'s files and its config with mlx-lm's key names."""
    src, dest = Path(src), Path(dest)
    dest.mkdir(parents=True)
    config = mlx_config(json.loads((src / "config.json").read_text()))
    for p in src.iterdir():
        if p.name == "config.json" or p.name.startswith(".") or not p.is_file():
            continue
        try:
            os.symlink(p.resolve(), dest / p.name)
        except OSError:  # a file system without links
            shutil.copy2(p, dest / p.name)
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest
