"""The MLX test double: an mlx-lm folder's files (weights, index, config with its quantization
entry, tokenizer, chat template), random bytes where the weights go."""

from __future__ import annotations

import json
from pathlib import Path

from ...testing.doubles import hf_metadata_files, random_file
from ..base import TestDouble
from .config import parse_variant

WEIGHTS, INDEX, TEMPLATE = "model.safetensors", "model.safetensors.index.json", "chat_template.jinja"


def write_mlx_double(
    folder: Path, model: str, variant: str, bits: int, *, size: int = 4096, **_: object
) -> TestDouble:
    cfg = parse_variant(variant)
    quant = {"group_size": cfg.group_size, "bits": cfg.low_bits, "mode": "affine"}
    shared = hf_metadata_files(folder, quant)
    config = json.loads((folder / "config.json").read_text())
    config["quantization"] = quant  # mlx-lm writes both names
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / TEMPLATE).write_text(
        "{%- if enable_thinking is defined and enable_thinking is false %}{%- endif %}"
    )
    random_file(folder / WEIGHTS, f"{folder.name}/{WEIGHTS}", size)
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": size}, "weight_map": {}}))
    recipe = {"bits": cfg.bits, "group_size": cfg.group_size, "recipe": cfg.recipe, "mode": "affine"}
    return TestDouble([WEIGHTS, INDEX], [*shared, TEMPLATE], recipe)
