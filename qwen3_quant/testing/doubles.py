"""Building blocks for the formats' test doubles (``QuantFormat.write_test_double``): files of
random bytes with real names, and the small JSON files an HF-style checkpoint folder carries."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

CALIBRATION = {"mix": "default", "samples": 128, "hash": "ab12cd34ef56"}


def random_file(path: Path, seed: str, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))


def hf_metadata_files(folder: Path, quantization_config: dict[str, Any] | None = None) -> list[str]:
    """config.json (with ``quantization_config`` when given) and tokenizer files; their names."""
    cfg: dict[str, Any] = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}
    if quantization_config:
        cfg["quantization_config"] = quantization_config
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer"}))
    return ["config.json", "tokenizer.json", "tokenizer_config.json"]
