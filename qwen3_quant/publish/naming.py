"""Names on the publishing side: GGUF files ``Qwen3-8B-Q4_K_M.gguf`` and llama.cpp splits
``Qwen3-8B-Q4_K_M-00001-of-00003.gguf`` read back for the model card; Hub repo ids; publish targets
``hf://ORG/NAME`` or a folder. Artifact (and so repo) names come from each format's
``artifact_name`` (``Qwen3-8B-GGUF``, ``Qwen3-8B-AWQ``, ``Qwen3-8B-GPTQ-Int4``, ``Qwen3-8B-ONNX-int4``).

Pure string functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

HF_SCHEME = "hf://"

_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_GGUF_TYPE = re.compile(r"^[A-Za-z0-9_]+$")
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<shard>\d{5})-of-(?P<shards>\d{5})$")


def model_short_name(name: str) -> str:
    """``Qwen/Qwen3-8B`` -> ``Qwen3-8B``; a plain name is returned as is."""
    return name.strip().rstrip("/").split("/")[-1]


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
    m = _SPLIT.match(stem)
    if m:
        stem, shard, shards = m["stem"], int(m["shard"]), int(m["shards"])
    if known_types is None:
        from ..formats.gguf.types import FILE_TYPES

        known_types = tuple(FILE_TYPES)
    for t in sorted(known_types, key=len, reverse=True):  # Q4_K before Q4_K_M would mis-split
        if stem.upper().endswith("-" + t.upper()):
            return GGUFName(stem[: -len(t) - 1], t.upper(), shard, shards)
    return None


def validate_repo_id(repo_id: str) -> str:
    """``ORG/NAME`` as the Hub accepts it, or a one-line :class:`UsageError`."""
    parts = repo_id.strip().split("/")
    ok = (
        len(parts) == 2
        and all(_REPO_PART.match(p) for p in parts)
        and len(parts[1]) <= 96
        and not any(".." in p or "--" in p for p in parts)
        and not parts[1].endswith(".git")
    )
    if not ok:
        raise UsageError(
            f"bad Hub repo id '{repo_id}'",
            hint="write hf://ORG/NAME with letters, digits, '-', '_' and '.', e.g. hf://my-org/Qwen3-8B-GGUF",
        )
    return "/".join(parts)


@dataclass(frozen=True)
class Target:
    """Where a publish goes: a Hub repo (``repo_id``) or a local folder (``path``)."""

    repo_id: str | None = None
    path: Path | None = None

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def __str__(self) -> str:
        return f"{HF_SCHEME}{self.repo_id}" if self.repo_id else str(self.path)


def parse_target(to: str | Path) -> Target:
    """``hf://ORG/NAME`` -> a Hub target; anything else is a local folder."""
    if isinstance(to, Path):
        return Target(path=to.expanduser())
    s = str(to).strip()
    if not s:
        raise UsageError("empty publish target", hint="pass --to hf://ORG/NAME or --to FOLDER")
    if s.lower().startswith(HF_SCHEME):
        return Target(repo_id=validate_repo_id(s[len(HF_SCHEME) :].strip("/")))
    if "://" in s:
        raise UsageError(f"unknown publish target '{s}'", hint="pass --to hf://ORG/NAME or --to FOLDER")
    return Target(path=Path(s).expanduser())
