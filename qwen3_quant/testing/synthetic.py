"""Random-weight checkpoints of any catalog shape, written a layer at a time.

``build_model`` (tiny.py) instantiates the whole transformers model, so a Qwen3-0.6B shape with 56
layers would need over 4 GB just to be made. This writer generates each tensor the catalog
describes (``iter_tensors``) and writes one safetensors shard per group of layers, so making a
checkpoint needs about one shard of memory. Weights are N(0, 0.02) like transformers' initialiser,
norms are ones: numbers that run, not a model that means anything. Used by the memory benchmark
and by tests that need a deep model of a real width.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from ..catalog.architecture import ArchShape, iter_tensors
from .tiny import TOKENIZER_FILES, TOKENIZER_SOURCE


def write_random_checkpoint(
    arch: ArchShape, out_dir: Path, *, seed: int = 0, layers_per_shard: int = 4, dtype: str = "bfloat16"
) -> Path:
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tdtype = getattr(torch, dtype)

    # the embedding table and the output head get shards of their own, the layers one per group
    specs = list(iter_tensors(arch))
    groups: dict[str, list] = {}
    for t in specs:
        if t.role == "embed":
            key = "embed"
        elif t.role in ("final_norm", "lm_head"):
            key = "head"
        else:
            key = f"layers{t.layer // layers_per_shard:05d}"
        groups.setdefault(key, []).append(t)
    order = ["embed", *sorted(k for k in groups if k.startswith("layers")), "head"]
    weight_map: dict[str, str] = {}
    for s, key in enumerate(order):
        name = f"model-{s + 1:05d}-of-{len(order):05d}.safetensors"
        tensors = {t.name: _random(torch, g, t.shape, tdtype) for t in groups[key]}
        weight_map.update({t: name for t in tensors})
        save_file(tensors, out_dir / name, metadata={"format": "pt"})
        del tensors
    total = sum((out_dir / f).stat().st_size for f in set(weight_map.values()))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    tok_cfg = json.loads((TOKENIZER_SOURCE / "config.json").read_text())
    cfg = {**arch.to_config(), "dtype": dtype, "use_cache": True}
    cfg.update(bos_token_id=tok_cfg.get("bos_token_id"), eos_token_id=tok_cfg.get("eos_token_id"))
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in TOKENIZER_FILES:
        shutil.copy2(TOKENIZER_SOURCE / f, out_dir / f)
    return out_dir


def _random(torch, g, shape, dtype, rows: int = 8192):
    """N(0, 0.02) in ``dtype`` (ones for a norm), made a block of rows at a time so that no fp32
    copy of a whole embedding table is ever held."""
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype)
    out = torch.empty(shape, dtype=dtype)
    for r in range(0, shape[0], rows):
        block = out[r : r + rows]
        block.copy_(torch.randn(block.shape, generator=g) * 0.02)
    return out


def catalog_shape(name: str, *, layers: int | None = None) -> ArchShape:
    """A catalog model's real shape, with ``layers`` decoder layers when given."""
    from ..catalog import catalog

    arch = catalog()[name].arch
    return dataclasses.replace(arch, num_hidden_layers=layers) if layers else arch
