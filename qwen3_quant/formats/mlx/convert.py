"""One checkpoint to one MLX artifact folder with mlx-lm: load (lazily) from a staging folder whose
config has mlx-lm's key names, cast to bfloat16, quantise (affine, or a mixed recipe), save; all
under a temporary name, the manifest recorded there, renamed when complete."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...artifact import VariantKey, decide_variant, library_versions, record_variant
from ...catalog.architecture import param_counts
from ...errors import CheckpointError, require
from ...io import atomic_output, ensure_free_space, remove_path
from ..base import Progress, no_progress
from .config import RECIPES, MLXConfig
from .sizes import ROUTER_BITS, ROUTER_GROUP, mlx_bytes
from .staging import stage_checkpoint

if TYPE_CHECKING:
    from ...checkpoint import CheckpointInfo
    from ...sources import ModelSource

log = logging.getLogger(__name__)

FORMAT_NAME = "mlx"
EXTRA = "mlx"
DTYPE = "bfloat16"  # the dtype of scales, biases and unquantised tensors, as mlx-community's repos
DROPPED = ("README.md",)  # mlx-lm's stub card: the publish writes the real one
KEY_SETTINGS = ("bits", "group_size", "recipe")


class _LogLines(io.TextIOBase):
    def write(self, s: str) -> int:
        if s.strip():
            log.debug("mlx-lm: %s", s.strip())
        return len(s)


def variant_key(cfg: MLXConfig, source_fp: str | None) -> VariantKey:
    settings = {k: getattr(cfg, k) for k in KEY_SETTINGS} | {"dtype": DTYPE}
    return VariantKey(FORMAT_NAME, cfg.variant, source_fp, settings)


def check_group_size(info: CheckpointInfo, cfg: MLXConfig) -> None:
    a = info.arch
    dims = {"hidden_size": a.hidden_size, "head_dim x heads": a.head_dim * a.num_attention_heads}
    dims["moe_intermediate_size" if a.is_moe else "intermediate_size"] = (
        a.moe_intermediate_size if a.is_moe else a.intermediate_size
    )
    bad = next((k for k, v in dims.items() if v % cfg.group_size), None)
    if bad:
        raise CheckpointError(
            f"MLX cannot quantise this model with group size {cfg.group_size}: {bad} {dims[bad]} "
            "is not a multiple of it",
            hint="choose --group-size 32 or 64",
        )


def quant_predicate(model, cfg: MLXConfig):
    """The model's own rule (a Qwen3-MoE router at 8 bits), then the recipe's for the rest."""
    own = getattr(model, "quant_predicate", None)
    mixed = None
    if cfg.recipe:
        from mlx_lm.convert import mixed_quant_predicate_builder

        mixed = mixed_quant_predicate_builder(cfg.recipe, model, cfg.group_size)

    def predicate(path: str, module) -> bool | dict:
        mine = own(path, module) if own else True
        if isinstance(mine, dict) or not mine:
            return mine
        return mixed(path, module) if mixed else True

    return predicate


def describe_weights(info: CheckpointInfo, cfg: MLXConfig) -> dict[str, str]:
    if cfg.recipe:
        lo, hi = RECIPES[cfg.recipe]
        out = {
            "linear": f"affine {lo}-bit, group {cfg.group_size}",
            "v_proj, down_proj": f"affine {hi}-bit in the first and last eighth of the layers and every "
            f"third between, else {lo}-bit",
            "lm_head": f"affine {hi}-bit" if not info.arch.tie_word_embeddings else "tied to the embedding",
            "embedding": f"affine {lo}-bit, group {cfg.group_size}",
        }
    else:
        how = f"affine {cfg.bits}-bit, group {cfg.group_size}"
        out = {"linear": how, "embedding": how}
        out["lm_head"] = how if not info.arch.tie_word_embeddings else "tied to the embedding"
    if info.arch.is_moe:
        out["router"] = f"affine {ROUTER_BITS}-bit, group {ROUTER_GROUP}"
    out["norms"] = DTYPE
    return out


def convert_checkpoint(src: Path, out: Path, cfg: MLXConfig | None, *, dtype: str = DTYPE) -> dict[str, Any]:
    """mlx-lm conversion of the checkpoint folder ``src`` into the new folder ``out``; ``cfg``
    ``None`` converts without quantising. Returns mlx-lm's ``quantization`` config entry."""
    mx = require("mlx.core", EXTRA)
    utils = require("mlx_lm.utils", EXTRA)
    from mlx.utils import tree_map_with_path

    stage = out.parent / f".{out.name}.stage"
    remove_path(stage)
    stage_checkpoint(src, stage)
    try:
        try:
            model, tokenizer, config = utils.load(str(stage), lazy=True, return_config=True)
        except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise CheckpointError(
                f"mlx-lm could not load {src.name}: {first}", hint="check the folder with `qwen3-quant check`"
            ) from exc
        target = getattr(mx, dtype)
        cast = getattr(model, "cast_predicate", lambda _k: True)
        model.update(
            tree_map_with_path(
                lambda k, v: v.astype(target) if cast(k) and mx.issubdtype(v.dtype, mx.floating) else v,
                model.parameters(),
            )
        )
        config = dict(config)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
        if cfg is not None:
            with contextlib.redirect_stdout(_LogLines()):  # mlx-lm prints its bits per weight
                model, config = utils.quantize_model(
                    model,
                    config,
                    cfg.group_size,
                    cfg.low_bits,
                    mode="affine",
                    quant_predicate=quant_predicate(model, cfg),
                )
        config["torch_dtype"] = dtype
        utils.save(out, stage, model, tokenizer, config)
    finally:
        remove_path(stage)
    for name in DROPPED:
        (out / name).unlink(missing_ok=True)
    return dict(config.get("quantization") or {})


def quantize_mlx(
    source: ModelSource,
    info: CheckpointInfo,
    cfg: MLXConfig,
    out_dir: Path,
    *,
    overwrite: bool = False,
    progress: Progress = no_progress,
    provenance=None,
) -> list[str]:
    from .staging import mlx_config

    out_dir = Path(out_dir)
    mlx_config(info.config)  # a model mlx-lm cannot run fails before anything is written
    check_group_size(info, cfg)
    require("mlx_lm", EXTRA)
    src = source.manifest_record()
    key = variant_key(cfg, src.get("fingerprint"))
    if not decide_variant(out_dir, key, overwrite=overwrite):
        return [cfg.variant]
    ensure_free_space(out_dir.parent, mlx_bytes(info.arch, cfg), what=f"write {out_dir.name}")
    progress("converting to MLX", 0, 1)
    with atomic_output(out_dir, overwrite=True) as tmp:  # decide_variant said what may be replaced
        quant = convert_checkpoint(info.path, tmp, cfg)
        weights = sorted(p.name for p in tmp.glob("*.safetensors"))
        index = [n for n in ("model.safetensors.index.json",) if (tmp / n).is_file()]
        shared = sorted(
            p.name
            for p in tmp.iterdir()
            if p.is_file() and p.name not in weights + index and p.name[0] != "."
        )
        template = tmp / "chat_template.jinja"
        params = param_counts(info.arch).total
        recipe = {
            "bits": cfg.bits if not cfg.recipe else None,
            "group_size": cfg.group_size,
            "recipe": cfg.recipe,
            "mode": "affine",
            "dtype": DTYPE,
            "weights": describe_weights(info, cfg),
            "bits_per_weight": round(8 * sum((tmp / w).stat().st_size for w in weights) / params, 3),
            "thinking_switch": template.is_file() and "enable_thinking" in template.read_text(),
            "quantization": {k: v for k, v in quant.items() if not isinstance(v, dict)},
            "mlx-lm": library_versions(("mlx-lm",)).get("mlx-lm"),
            "mlx": library_versions(("mlx",)).get("mlx"),
        }
        record_variant(
            tmp,
            name=out_dir.name,
            fmt=FORMAT_NAME,
            source=src,
            variant=cfg.variant,
            files=[*weights, *index],
            recipe=recipe,
            key=key,
            shared_files=shared,
            provenance=provenance,
        )
    progress("converting to MLX", 1, 1)
    log.info("wrote %s", out_dir)
    return [cfg.variant]
