"""The project's streaming Hugging Face safetensors -> GGUF converter (F32, F16 or BF16 weights).

Tensors are read from the safetensors shards one chunk at a time and written out at once, so
peak memory is a few chunks, not the model. Experts of a Qwen3-MoE layer, stored one tensor per
expert (as on the Hub) or fused by transformers, are stacked into llama.cpp's 3-D ``*_exps``
tensors on the fly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...checkpoint import CheckpointInfo
from ..base import Progress, no_progress
from .gguf_io import GGUFStream
from .metadata import ARCH_NAMES, ModelDescription, add_model_metadata
from .tensors import iter_job_bytes, plan_conversion
from .tokenizer import add_tokenizer_metadata, load_vocab
from .types import FILE_TYPES, UNQUANTISED

log = logging.getLogger(__name__)


def base_type_for(info: CheckpointInfo) -> str:
    """The lossless GGUF float type for a checkpoint: BF16 for bf16 weights, F16 for fp16, else F32."""
    if "BF16" in info.dtypes:
        return "BF16"
    if info.dtypes <= {"F16"}:
        return "F16"
    return "F32"


def convert(
    info: CheckpointInfo,
    desc: ModelDescription,
    dest: Path,
    *,
    out_type: str = "BF16",
    max_shard_size: int = 0,
    progress: Progress = no_progress,
) -> list[Path]:
    """Write ``dest`` (or its ``-0000i-of-0000n`` splits) and return the files written.

    The caller owns naming: write into a temporary folder and move the files when this returns.
    """
    if out_type not in UNQUANTISED:
        raise ValueError(f"the converter writes F32, F16 or BF16, not {out_type}")
    jobs = plan_conversion(info, out_type)
    vocab = load_vocab(info.path, info.arch.vocab_size)
    stream = GGUFStream(dest, ARCH_NAMES[info.arch.model_type], max_shard_size=max_shard_size)
    add_model_metadata(stream.w, info, desc, file_type=FILE_TYPES[out_type][0])
    add_tokenizer_metadata(stream.w, vocab)
    for j in jobs:
        stream.declare(j.name, j.shape, j.ggml_type, j.nbytes)
    desc_text = f"converting {info.path.name} to {out_type}"
    try:
        stream.begin()
        for i, job in enumerate(jobs):
            for chunk in iter_job_bytes(job):
                stream.write(chunk)
            progress(desc_text, i + 1, len(jobs))
        paths = stream.finish()
    except BaseException:
        stream.abort()
        raise
    log.info("wrote %s (%d tensors, %d file(s))", dest.name, len(jobs), len(paths))
    return paths
