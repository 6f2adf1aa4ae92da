"""The GPTQ / AWQ test double: a checkpoint folder with a quantization_config and random weights."""

from __future__ import annotations

from pathlib import Path

from ...testing.doubles import CALIBRATION, hf_metadata_files, random_file
from ..base import TestDouble


def write_gptqmodel_double(
    folder: Path, model: str, variant: str, bits: int, *, method: str, size: int = 4096, **_: object
) -> TestDouble:
    shared = hf_metadata_files(folder, {"quant_method": method, "bits": bits, "group_size": 128})
    random_file(folder / "model.safetensors", f"{folder.name}/model.safetensors", size)
    recipe = {"bits": bits, "group_size": 128, "sym": True, "calibration": dict(CALIBRATION)}
    return TestDouble(["model.safetensors"], shared, recipe)
