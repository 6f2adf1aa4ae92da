"""GGUF file names: ``Qwen3-8B-Q4_K_M.gguf``, llama.cpp's splits ``Qwen3-8B-Q4_K_M-00001-of-00003.gguf``
and the importance matrix ``Qwen3-8B.imatrix.gguf``; read back for cards and tools. Pure string
functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import UsageError
from ...publish.naming import model_short_name

_GGUF_TYPE = re.compile(r"^[A-Za-z0-9_]+$|^AUTO_[0-9.]+BPW$")
_AUTO_SUFFIX = re.compile(r"-(AUTO_(?:[0-9.]+BPW|[A-Z0-9_]+))$", re.IGNORECASE)
SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<shard>\d{5})-of-(?P<shards>\d{5})\.gguf$")


def gguf_type(name: str) -> str:
    """Canonical spelling of a llama.cpp file type: ``q4_k_m`` -> ``Q4_K_M``."""
    t = name.strip().upper()
    if not _GGUF_TYPE.match(t):
        raise UsageError(f"bad GGUF type '{name}'", hint="write it as llama.cpp does, e.g. Q4_K_M")
    return t


def gguf_file_name(
    model_name: str, type_name: str, *, shard: int | None = None, shards: int | None = None
) -> str:
    """``Qwen3-8B-Q4_K_M.gguf``; with ``shard``/``shards`` llama.cpp's split name
    ``Qwen3-8B-Q4_K_M-00001-of-00003.gguf`` (shards count from 1)."""
    stem = f"{model_short_name(model_name)}-{gguf_type(type_name)}"
    if shard is None and shards is None:
        return f"{stem}.gguf"
    if shard is None or shards is None or not 1 <= shard <= shards:
        raise UsageError(f"bad shard {shard} of {shards}", hint="shards count from 1 to the number of shards")
    return f"{stem}-{shard:05d}-of-{shards:05d}.gguf"


def imatrix_file_name(model_name: str) -> str:
    return f"{model_short_name(model_name)}.imatrix.gguf"


def split_names(path: Path, n: int) -> list[Path]:
    """The files of ``X.gguf`` written as ``n`` llama.cpp splits (one file keeps its name)."""
    if n <= 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]


def split_set(first: Path) -> list[Path]:
    """All files of a (possibly split) GGUF model given its first file."""
    m = SPLIT_RE.match(first.name)
    if not m:
        return [first]
    return split_names(first.with_name(m["stem"] + ".gguf"), int(m["shards"]))


@dataclass(frozen=True)
class GGUFName:
    model: str
    type: str
    shard: int | None = None
    shards: int | None = None


def parse_gguf_file_name(file_name: str, known_types: tuple[str, ...] | None = None) -> GGUFName | None:
    """Read back :func:`gguf_file_name`: ``Qwen3-8B-Q4_K_M-00001-of-00003.gguf`` ->
    ``GGUFName("Qwen3-8B", "Q4_K_M", 1, 3)``. ``None`` when the name does not follow the convention."""
    name = Path(file_name).name
    if not name.lower().endswith(".gguf"):
        return None
    stem = name[: -len(".gguf")]
    shard = shards = None
    m = SPLIT_RE.match(name)
    if m:
        stem, shard, shards = m["stem"], int(m["shard"]), int(m["shards"])
    if known_types is None:
        from .types import FILE_TYPES

        known_types = tuple(FILE_TYPES)
    for t in sorted(known_types, key=len, reverse=True):  # Q4_K before Q4_K_M would mis-split
        if stem.upper().endswith("-" + t.upper()):
            return GGUFName(stem[: -len(t) - 1], t.upper(), shard, shards)
    m = _AUTO_SUFFIX.search(stem)  # an automatic mix: AUTO_4.5BPW, AUTO_Q4_K_M
    if m:
        return GGUFName(stem[: m.start()], m.group(1).upper(), shard, shards)
    return None
