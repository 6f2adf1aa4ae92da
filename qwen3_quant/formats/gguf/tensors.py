"""Where each GGUF tensor's bytes come from in a Hugging Face checkpoint, and reading them in chunks.

A GGUF tensor is a list of *pieces*, contiguous byte ranges of the safetensors shards written one
after the other: a plain weight is one piece; a layer's stacked experts are one piece per expert
(per-expert layout as on the Hub) or slices of transformers' fused ``gate_up_proj``. Pieces are
read and converted in chunks of at most :data:`CHUNK_ELEMENTS`, so memory stays bounded by the
chunk, whatever the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...catalog.architecture import iter_tensors
from ...checkpoint import CheckpointInfo, read_safetensors_header
from ...errors import CheckpointError
from .types import GGML_TYPES, plan_tensors

CHUNK_ELEMENTS = 16 * 1024 * 1024
_ST_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}


@dataclass(frozen=True)
class Piece:
    shard: Path
    offset: int  # absolute byte offset in the shard
    numel: int
    dtype: str  # safetensors dtype: BF16, F16 or F32


@dataclass(frozen=True)
class TensorJob:
    name: str
    shape: tuple[int, ...]  # numpy order: rows last
    ggml_type: str  # F32, F16 or BF16
    pieces: tuple[Piece, ...]

    @property
    def nbytes(self) -> int:
        return GGML_TYPES[self.ggml_type].nbytes(math.prod(self.shape))


class _Index:
    """name -> (shard, absolute offset, dtype, shape) from the safetensors headers."""

    def __init__(self, info: CheckpointInfo):
        self.entries: dict[str, tuple[Path, int, str, tuple[int, ...]]] = {}
        for shard in info.shards:
            header, data_start = read_safetensors_header(shard)
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                lo = int(meta["data_offsets"][0])
                self.entries[name] = (
                    shard,
                    data_start + lo,
                    meta["dtype"],
                    tuple(int(d) for d in meta["shape"]),
                )

    def piece(self, name: str, *, skip: int = 0, numel: int | None = None) -> Piece:
        if name not in self.entries:
            raise CheckpointError(
                f"weight {name} is missing", hint="the checkpoint does not match its config.json"
            )
        shard, off, dtype, shape = self.entries[name]
        total = int(np.prod(shape))
        n = total - skip if numel is None else numel
        return Piece(shard, off + skip * _ST_ITEMSIZE[dtype], n, dtype)


def plan_conversion(info: CheckpointInfo, out_type: str) -> list[TensorJob]:
    """Every tensor of the GGUF file, in writing order, with its source pieces.

    Names, shapes and types are :func:`~.types.plan_tensors`' (the layout the size estimates and
    llama.cpp's files are checked against): norms and the MoE router stay F32, the other weights
    get ``out_type``, tied models get no ``output.weight`` (llama.cpp reuses ``token_embd``).
    """
    a = info.arch
    idx = _Index(info)
    jobs: list[TensorJob] = []
    for t, p in zip(iter_tensors(a, stacked=True), plan_tensors(a, out_type), strict=True):
        pieces = (idx.piece(t.name),) if t.expert < 0 else _expert_pieces(info, idx, t.role, t.layer)
        jobs.append(TensorJob(p.name, tuple(p.shape), p.ggml_type, pieces))
    return jobs


def _expert_pieces(info: CheckpointInfo, idx: _Index, role: str, layer: int) -> tuple[Piece, ...]:
    a = info.arch
    proj = {"expert_gate": "gate_proj", "expert_up": "up_proj", "expert_down": "down_proj"}[role]
    prefix = f"model.layers.{layer}.mlp.experts."
    if info.expert_layout != "fused":
        return tuple(idx.piece(f"{prefix}{e}.{proj}.weight") for e in range(a.num_experts))
    if role == "expert_down":
        return (idx.piece(prefix + "down_proj"),)
    # fused gate_up_proj is [experts, 2 * moe_intermediate, hidden]: gate rows first, then up rows
    m, h = a.moe_intermediate_size, a.hidden_size
    first = 0 if role == "expert_gate" else m * h
    return tuple(
        idx.piece(prefix + "gate_up_proj", skip=e * 2 * m * h + first, numel=m * h)
        for e in range(a.num_experts)
    )


def _read(fh, piece: Piece, start: int, count: int) -> np.ndarray:
    size = _ST_ITEMSIZE[piece.dtype]
    buf = np.empty(count * size, dtype=np.uint8)
    fh.seek(piece.offset + start * size)
    if fh.readinto(memoryview(buf)) != buf.nbytes:
        raise CheckpointError(f"{piece.shard.name} is truncated", hint="re-download or re-save this file")
    return buf


def convert_chunk(raw: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert raw little-endian bytes of dtype ``src`` to the bytes of GGUF type ``dst``."""
    if src == dst:
        return raw
    if src == "BF16":
        f32 = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif src == "F16":
        f32 = raw.view(np.float16).astype(np.float32)
    else:
        f32 = raw.view(np.float32)
    if dst == "F32":
        return f32.view(np.uint8)
    if dst == "F16":
        return f32.astype(np.float16).view(np.uint8)
    return _to_bf16(f32).view(np.uint8)


def _to_bf16(f32: np.ndarray) -> np.ndarray:
    """Round to nearest even, NaN kept quiet: what ggml's and gguf-py's converters do."""
    n = f32.view(np.uint32).astype(np.uint32)
    nan = (n & 0x7FFFFFFF) > 0x7F800000
    rounded = ((n.astype(np.uint64) + (0x7FFF + ((n >> 16) & 1))) >> 16).astype(np.uint16)
    return np.where(nan, ((n >> 16) | 0x40).astype(np.uint16), rounded)


def iter_job_bytes(job: TensorJob, chunk: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    """The bytes of one GGUF tensor, piece after piece, in chunks of at most ``chunk`` elements."""
    handles: dict[Path, object] = {}
    try:
        for p in job.pieces:
            fh = handles.get(p.shard)
            if fh is None:
                fh = handles[p.shard] = open(p.shard, "rb")  # noqa: SIM115 - closed below
            for start in range(0, p.numel, chunk):
                n = min(chunk, p.numel - start)
                yield convert_chunk(_read(fh, p, start, n), p.dtype, job.ggml_type)
    finally:
        for fh in handles.values():
            fh.close()
