"""ONNX artifacts built once per test session and shared by the tests/test_onnx_*.py files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_BUILT: dict[tuple, Path] = {}


def onnx_artifact(tmp_path_factory, src: Path, precision: str, **options) -> Path:
    """The artifact folder (with its manifest) of ``src`` at ``precision``, built on first use."""
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.onnx import FORMAT
    from qwen3_quant.formats.onnx.convert import quantize_onnx
    from qwen3_quant.sources import resolve_model

    key = (str(src), precision, tuple(sorted(options.items())))
    if key not in _BUILT:
        cfg = FORMAT.parse_options({"precision": precision, **options})
        source = resolve_model(str(src))
        out = tmp_path_factory.mktemp("onnx") / FORMAT.artifact_name(source.name, cfg)
        quantize_onnx(source, inspect_checkpoint(source.path), cfg, out)
        _BUILT[key] = out
    return _BUILT[key]


def prompt(src: Path, n: int = 48, seed: int = 0) -> list[int]:
    vocab = json.loads((Path(src) / "config.json").read_text())["vocab_size"]
    return np.random.default_rng(seed).integers(0, min(vocab, 8000), n).tolist()


def onnx_file_bytes(folder: Path) -> int:
    return sum((folder / f).stat().st_size for f in ("model.onnx", "model.onnx.data"))
