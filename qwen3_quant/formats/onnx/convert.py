"""One checkpoint to one ONNX artifact folder: build into a temporary sibling, record the manifest
there, rename when complete. An intact artifact with the same recipe is kept; anything else under
the final name is replaced only with ``overwrite``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ...artifact import VariantKey, decide_variant, library_versions, record_variant
from ...io import atomic_output, ensure_free_space, remove_path
from ..base import Progress, no_progress
from . import graph
from .build import builder_version, model_kind, run_builder
from .config import OnnxConfig
from .sizes import onnx_bytes

if TYPE_CHECKING:
    from ...checkpoint import CheckpointInfo
    from ...sources import ModelSource

log = logging.getLogger(__name__)

FORMAT_NAME = "onnx"
VARIANT_FILES = (graph.MODEL_FILE, graph.DATA_FILE)
SOURCE_FILES = ("config.json", "generation_config.json")
# the settings that make two builds of one precision different artifacts
KEY_SETTINGS = ("precision", "block_size", "accuracy_level", "quantizer")


def _describe_weights(cfg: OnnxConfig, info: CheckpointInfo, shared: bool) -> dict[str, str]:
    a = info.arch
    if cfg.is_int:
        how = f"MatMulNBits {cfg.precision}, block {cfg.block_size}, {cfg.quantizer}"
        out = {"linear": how, "lm_head": how}
        if shared:
            out["embedding"] = "the lm_head's matrix (GatherBlockQuantized)"
        else:
            out["embedding"] = f"GatherBlockQuantized {cfg.precision}, block {cfg.block_size}"
        if a.is_moe:
            out["experts"] = f"QMoE {cfg.precision}, block {cfg.block_size}, round-to-nearest"
            out["router"] = "fp32"
    else:
        out = {"all": cfg.precision}
        if a.is_moe:
            out["experts"] = f"MoE {cfg.precision}"
    return out


def variant_key(cfg: OnnxConfig, source_fp: str) -> VariantKey:
    return VariantKey(FORMAT_NAME, cfg.precision, source_fp, {k: getattr(cfg, k) for k in KEY_SETTINGS})


def quantize_onnx(
    source: ModelSource,
    info: CheckpointInfo,
    cfg: OnnxConfig,
    out_dir: Path,
    *,
    overwrite: bool = False,
    progress: Progress = no_progress,
    provenance=None,
) -> list[str]:
    from . import FORMAT

    out_dir = Path(out_dir)
    model_kind(info.config)  # an architecture the builder cannot take fails before anything is written
    src = source.manifest_record()
    key = variant_key(cfg, src["fingerprint"])
    if not decide_variant(out_dir, key, overwrite=overwrite):
        return [cfg.precision]
    need = onnx_bytes(info.arch, cfg.precision, cfg.block_size or 32)
    ensure_free_space(out_dir.parent, need, what=f"write {out_dir.name}")
    with atomic_output(out_dir, overwrite=True) as tmp:  # decide_variant said what may be replaced
        tmp.mkdir(parents=True)
        cache = tmp / ".builder-cache"
        built = run_builder(info, tmp, cfg, cache, progress=progress)
        remove_path(cache)
        for name in SOURCE_FILES:  # the architecture, for model cards and readers of the folder
            if (info.path / name).is_file():
                shutil.copy2(info.path / name, tmp / name)
        shared_files = sorted(
            p.name for p in tmp.iterdir() if p.is_file() and p.name not in VARIANT_FILES and p.name[0] != "."
        )
        recipe = {
            "precision": cfg.precision,
            "bits": cfg.bits,
            "block_size": cfg.block_size,
            "accuracy_level": cfg.accuracy_level,
            "quantizer": cfg.quantizer,
            "weights": _describe_weights(cfg, info, built.tied_embedding_shared),
            "tied_embedding_shared": built.tied_embedding_shared,
            "exporter": built.exporter,
            "builder": {
                "package": "onnxruntime-genai",
                "version": builder_version(),
                "execution_provider": built.execution_provider,
                "extra_options": {k: v for k, v in built.extra_options.items() if not k.startswith("hf_")},
            },
            "onnxruntime": library_versions(("onnxruntime",)).get("onnxruntime"),
            "graph": graph.describe(tmp),
        }
        record_variant(
            tmp,
            name=FORMAT.artifact_name(source.name, cfg),
            fmt=FORMAT_NAME,
            source=src,
            variant=cfg.precision,
            files=list(VARIANT_FILES),
            recipe=recipe,
            key=key,
            shared_files=shared_files,
            provenance=provenance,
        )
    log.info("wrote %s", out_dir)
    return [cfg.precision]
