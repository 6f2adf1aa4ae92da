"""The ONNX test double: graph and external-data files named as the real ones, random bytes."""

from __future__ import annotations

import json
from pathlib import Path

from ...testing.doubles import hf_metadata_files, random_file
from ..base import TestDouble
from .graph import DATA_FILE, MODEL_FILE


def write_onnx_double(
    folder: Path, model: str, variant: str, bits: int, *, size: int = 4096, **_: object
) -> TestDouble:
    shared = hf_metadata_files(folder)
    (folder / "genai_config.json").write_text(json.dumps({"model": {"type": "qwen3"}}))
    for f in (MODEL_FILE, DATA_FILE):
        random_file(folder / f, f"{folder.name}/{f}", size)
    recipe = {"precision": variant, "bits": bits, "block_size": 32, "accuracy_level": 4}
    return TestDouble([MODEL_FILE, DATA_FILE], [*shared, "genai_config.json"], recipe)
