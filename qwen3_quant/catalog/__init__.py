"""The catalog of the eight open Qwen3 models, read from ``models.toml``, and the bundled micro models."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import UnknownModelError
from .architecture import ArchShape, ParamCounts, param_counts, size_label

__all__ = ["ModelEntry", "catalog", "lookup", "bundled_models", "ArchShape", "ParamCounts"]

_HERE = Path(__file__).resolve().parent
ASSETS = _HERE.parent / "assets"
MICRO_DIR = ASSETS / "micro"
BUNDLED = {"Qwen3-Micro": MICRO_DIR / "Qwen3-Micro", "Qwen3-Micro-MoE": MICRO_DIR / "Qwen3-Micro-MoE"}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    hub_id: str
    base_hub_id: str | None
    arch: ArchShape
    native_context: int
    yarn_context: int | None
    license: str
    published: dict[str, float]

    @property
    def params(self) -> ParamCounts:
        return param_counts(self.arch)

    @property
    def size_label(self) -> str:
        return size_label(self.arch)


@cache
def catalog() -> dict[str, ModelEntry]:
    data = tomllib.loads((_HERE / "models.toml").read_text())
    d = data["defaults"]
    out: dict[str, ModelEntry] = {}
    for name, m in data["models"].items():
        merged = {**d, **m}
        arch = ArchShape.from_config(merged)  # the catalog holds each config.json's own keys
        out[name] = ModelEntry(
            name=name,
            hub_id=merged["hub_id"],
            base_hub_id=merged.get("base_hub_id") or None,
            arch=arch,
            native_context=merged["native_context"],
            yarn_context=merged.get("yarn_context") or None,
            license=merged["license"],
            published=dict(merged.get("published", {})),
        )
    return out


def lookup(name: str) -> tuple[ModelEntry, bool] | None:
    """Find a catalog model by name, case-insensitively; ``-Base`` selects the base checkpoint.

    Returns ``(entry, is_base)`` or ``None``.
    """
    key = name.strip().removeprefix("Qwen/").lower()
    is_base = key.endswith("-base")
    if is_base:
        key = key[: -len("-base")]
    for entry in catalog().values():
        if entry.name.lower() == key:
            return entry, is_base
    return None


def get(name: str) -> ModelEntry:
    hit = lookup(name)
    if hit is None:
        raise UnknownModelError(
            f"unknown model '{name}'",
            hint="use one of " + ", ".join(catalog()) + ", a Hub id such as Qwen/Qwen3-8B, or a local folder",
        )
    return hit[0]


def bundled_models() -> dict[str, Path]:
    """The trained micro models that ship with the package (offline demo and tests)."""
    return dict(BUNDLED)


def bundled_lookup(name: str) -> Path | None:
    for k, p in BUNDLED.items():
        if k.lower() == name.strip().lower():
            return p
    return None
