"""MLX for mlx-lm: Apple's MLX arrays, quantised by mlx-lm (affine 4/8-bit, mixed recipes) and
validated in MLX itself (``mlx[cpu]`` on Linux, Metal on Apple silicon).

``qwen3-quant quantize Qwen3-8B --format mlx --bits 4`` writes ``Qwen3-8B-4bit``, named and laid
out as mlx-community's repos. Importing this package is instant: mlx and mlx-lm load only when
converting or evaluating.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...catalog.architecture import ArchShape
from ..base import GiB, Progress, QuantFormat, Runtime, SizeEstimate, UsageContext, no_progress
from .config import OPTIONS, MLXConfig, parse_mlx_options, parse_variant
from .sizes import mlx_bytes

if TYPE_CHECKING:
    from ...checkpoint import CheckpointInfo
    from ...provenance import Provenance
    from ...sources import ModelSource

__all__ = ["FORMAT", "MLXFormat", "MLXConfig", "mlx_bytes"]

SHARD_BYTES = 5 * 1024**3  # mlx-lm's save_model: shards of at most 5 GB


class MLXFormat(QuantFormat):
    name = "mlx"
    extra = "mlx"
    libraries = ("mlx", "mlx-lm")
    options = OPTIONS
    runtimes = (Runtime("mlx", "qwen3_quant.formats.mlx.runner:MLXRunner", "MLX (mlx-lm)"),)
    cell_axis = "bits"
    card_description, hub_library = "MLX weights for mlx-lm (affine quantisation)", "mlx"
    recipe_labels = {
        "group_size": "Group size",
        "recipe": "Mixed recipe",
        "mode": "Mode",
        "thinking_switch": "Chat template with enable_thinking",
        "quantization": "config.json quantization",
        "mlx-lm": "mlx-lm",
        "mlx": "MLX",
    }
    table_types = ("4bit", "8bit")
    seconds_per_billion, min_seconds = 60.0, 10.0

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        from ...catalog.architecture import param_counts

        cfg = parse_variant(variant)
        size = mlx_bytes(arch, cfg)
        # mlx-lm loads the checkpoint lazily and evaluates the quantised tensors one output shard
        # (at most 5 GB) at a time as it saves: that shard, and the bf16 source tensors it is made
        # from, are held at once (a model of mlx-lm's saving loop, not measured on a large model)
        source = 2 * param_counts(arch).total
        shard = min(size, SHARD_BYTES)
        shard_source = min(source, int(shard * 16 / max(cfg.low_bits, 1)))
        return SizeEstimate(size, int(shard + shard_source + 1.0 * GiB))

    def nominal_bits(self, variant: str) -> int:
        return parse_variant(variant).low_bits

    def available(self) -> bool:
        return importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None

    def calibrates(self, config: MLXConfig) -> bool:
        return False  # round-to-nearest affine quantisation: no calibration data

    def parse_options(self, options: dict[str, Any]) -> MLXConfig:
        return parse_mlx_options(options)

    def artifact_name(self, model_name: str, config: MLXConfig) -> str:
        return f"{model_name}-{config.variant}"

    def variants(self, config: MLXConfig) -> list[str]:
        return [config.variant]

    def quantize(
        self,
        source: ModelSource,
        info: CheckpointInfo,
        config: MLXConfig,
        out_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress = no_progress,
        provenance: Provenance | None = None,
        device=None,  # mlx-lm converts on MLX's default device (gpu_quantise is False)
    ) -> list[str]:
        from .convert import quantize_mlx

        return quantize_mlx(
            source, info, config, out_dir, overwrite=overwrite, progress=progress, provenance=provenance
        )

    def recognises(self, path: Path) -> str | None:
        p = Path(path)
        cfg = p / "config.json"
        if not (p.is_dir() and cfg.is_file()):
            return None
        try:
            config = json.loads(cfg.read_text())
        except (OSError, ValueError):
            return None
        # mlx-lm writes "quantization" (with "mode"); transformers' quantised checkpoints do not
        q = config.get("quantization")
        return self.runtime if isinstance(q, dict) and "group_size" in q and "bits" in q else None

    def usage(self, ctx: UsageContext) -> str:
        from .usage import mlx_usage

        return mlx_usage(ctx)

    def write_test_double(self, folder: Path, model: str, variant: str, bits: int, **kw: Any):
        from .double import write_mlx_double

        return write_mlx_double(folder, model, variant, bits, **kw)


FORMAT = MLXFormat()
