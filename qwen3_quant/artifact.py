"""The artifact manifest, ``qwen3_quant.json``, written beside every artifact's files.

An artifact folder is shaped like the Hub repo it will be published as (``Qwen3-8B-GGUF``,
``Qwen3-8B-GPTQ-Int4``). It holds one or more *variants* (GGUF types; one for the other
formats), each with its files, recipe and validation result. The manifest records the sha256 of
every file at quantisation time; publishing checks them again.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import MissingFileError
from .io import atomic_write_json, file_lock, sha256_file

MANIFEST = "qwen3_quant.json"
SCHEMA = 1
_LIBS = (
    "torch",
    "transformers",
    "gguf",
    "llama_cpp_python",
    "gptqmodel",
    "optimum",
    "defuser",
    "onnx",
    "onnxruntime",
    "onnxruntime-genai",
    "safetensors",
    "tokenizers",
    "huggingface_hub",
)


def tool_version() -> str:
    try:
        return metadata.version("qwen3-quant")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def library_versions(names: tuple[str, ...] = _LIBS) -> dict[str, str]:
    out = {}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out


def host_description() -> str:
    import os

    return f"{platform.machine()} CPU, {os.cpu_count()} threads, {platform.system()}"


def manifest_lock(folder: Path):
    """Serialise read-modify-write of one folder's manifest across processes."""
    return file_lock(Path(folder) / f".{MANIFEST}.lock")


def load_manifest(folder: Path) -> dict[str, Any]:
    f = Path(folder) / MANIFEST
    if not f.is_file():
        raise MissingFileError(
            f"{folder} has no {MANIFEST}", hint="quantise with qwen3-quant to get an artifact folder"
        )
    return json.loads(f.read_text())


def load_manifest_or_none(folder: Path) -> dict[str, Any] | None:
    f = Path(folder) / MANIFEST
    return json.loads(f.read_text()) if f.is_file() else None


def new_manifest(name: str, fmt: str, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "name": name,
        "format": fmt,
        "tool": {"name": "qwen3-quant", "version": tool_version()},
        "source": source,
        "variants": {},
        "files": {},
    }


def record_variant(
    folder: Path,
    *,
    name: str,
    fmt: str,
    source: dict[str, Any],
    variant: str,
    files: list[str],
    recipe: dict[str, Any],
    shared_files: list[str] = (),
    command: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add or replace one variant (with the sha256 of its files) in the folder's manifest.

    ``recipe`` is what a reader (and the model card) needs to know and reproduce; ``details`` holds
    bulky diagnostics (per-expert statistics, logs) kept in the manifest only."""
    folder = Path(folder)
    with manifest_lock(folder):
        m = load_manifest_or_none(folder) or new_manifest(name, fmt, source)
        m["source"] = source
        m["tool"] = {"name": "qwen3-quant", "version": tool_version()}
        for f in [*files, *shared_files]:
            p = folder / f
            m["files"][f] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
        m["variants"][variant] = {
            "files": list(files),
            "recipe": recipe,
            "libraries": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command,
            "validation": None,
        }
        if details is not None:
            m["variants"][variant]["details"] = details
        atomic_write_json(folder / MANIFEST, m)
        return m


def record_validation(folder: Path, variant: str, validation: dict[str, Any]) -> dict[str, Any]:
    folder = Path(folder)
    with manifest_lock(folder):
        m = load_manifest(folder)
        if variant not in m["variants"]:
            raise MissingFileError(f"{folder}: no variant {variant} in {MANIFEST}", hint="quantise it first")
        m["variants"][variant]["validation"] = validation
        atomic_write_json(folder / MANIFEST, m)
        return m


def verify_files(folder: Path, manifest: dict[str, Any], files: list[str] | None = None) -> list[str]:
    """Return the files whose size or sha256 differ from the manifest (missing files included)."""
    bad = []
    for f in files or list(manifest["files"]):
        meta = manifest["files"].get(f)
        p = Path(folder) / f
        if (
            meta is None
            or not p.is_file()
            or p.stat().st_size != meta["size"]
            or sha256_file(p) != meta["sha256"]
        ):
            bad.append(f)
    return bad
