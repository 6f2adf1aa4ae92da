"""The GGUF test double: variant files named as the real ones (splits included), random bytes."""

from __future__ import annotations

from pathlib import Path

from ...testing.doubles import CALIBRATION, random_file
from ..base import TestDouble
from .naming import gguf_file_name


def write_gguf_double(
    folder: Path, model: str, variant: str, bits: int, *, size: int = 4096, shards: int | None = None,
    imatrix: bool = True, ollama: bool = False, **_: object,
) -> TestDouble:  # fmt: skip
    files = (
        [gguf_file_name(model, variant, shard=i, shards=shards) for i in range(1, shards + 1)]
        if shards
        else [gguf_file_name(model, variant)]
    )
    for f in files:
        random_file(folder / f, f"{folder.name}/{f}", size)
    shared = []
    if ollama:  # the files the real build writes from the checkpoint: the micro model's here
        from ...catalog import MICRO_DIR
        from .ollama import ollama_files

        for name, data in ollama_files(MICRO_DIR / "Qwen3-Micro").items():
            (folder / name).write_bytes(data)
            shared.append(name)
    recipe: dict = {"type": variant, "bits": bits, "imatrix": imatrix and bits <= 4}
    if imatrix and bits <= 4:
        recipe["calibration"] = dict(CALIBRATION)
    return TestDouble(files, shared, recipe)
