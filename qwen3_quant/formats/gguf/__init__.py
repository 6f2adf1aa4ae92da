"""GGUF for llama.cpp: the project's streaming writer (gguf-py), llama.cpp's quantiser and runtime."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...catalog.architecture import ArchShape, iter_tensors
from ..base import (
    EvalTarget,
    GiB,
    Progress,
    QuantFormat,
    Runtime,
    SizeEstimate,
    UsageContext,
    largest_layer_params,
    no_progress,
)
from .config import OPTIONS, GGUFConfig, nominal_bits, parse_options
from .types import TABLE_TYPES, estimate_file_size, normalise_type

if TYPE_CHECKING:
    from ...artifact import Manifest
    from ...provenance import Provenance

CALIB_TOKENS = 128 * 512  # the default mix: 128 samples of up to 512 tokens


class GGUFFormat(QuantFormat):
    name = "gguf"
    extra = "gguf"
    libraries = ("gguf", "llama_cpp_python")
    options = OPTIONS
    runtimes = (Runtime("llama.cpp", "qwen3_quant.formats.gguf.runner:LlamaCppRunner", "llama.cpp"),)
    cell_axis = "types"
    card_description, hub_library = "GGUF files for llama.cpp", "gguf"
    recipe_labels = {"type": "Type", "imatrix": "Importance matrix"}
    seconds_per_billion, min_seconds = 90.0, 20.0
    scratch_source_copies = 1.0  # the bf16 base conversion every type is made from
    table_types = TABLE_TYPES
    shares_folder = True  # every type of a model in one folder, as Hub GGUF repos are
    rebuild_damaged = True  # a damaged type is rebuilt from the kept base conversion
    variant_counts_shared_files = False  # the importance matrix is a by-product, not part of a type
    gpu_quantise = True  # the importance matrix (llama.cpp's conversion and quantiser stay on the CPU)

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        ftype = normalise_type(variant)
        # llama.cpp's quantiser holds one tensor (MoE: one layer's stacked experts) in f32 plus its
        # quantised copy; the converter streams chunks. The importance matrix (on by default at 4
        # bits and below) runs the model one layer at a time: a layer (bf16 at least, with copies
        # while it is assembled), the embedding table once, and the calibration's hidden states
        biggest = max(t.total_numel for t in iter_tensors(arch, stacked=True))
        peak = int(5 * biggest + 0.75 * GiB)
        gpu = None
        if GGUFConfig(types=(ftype,)).uses_imatrix(ftype):
            hidden_states = 2 * 4 * CALIB_TOKENS * arch.hidden_size
            layer = 5 * largest_layer_params(arch)
            peak = max(peak, int(layer + 2 * arch.vocab_size * arch.hidden_size + hidden_states + GiB))
            # on CUDA: one layer (fp32 when it fits) and the hidden states on the GPU, the CUDA context
            gpu = int(4 * largest_layer_params(arch) + hidden_states + GiB)
        return SizeEstimate(
            artifact_bytes=estimate_file_size(arch, ftype), quantise_peak_bytes=peak, gpu_peak_bytes=gpu
        )

    def runtime_peak_bytes(self, arch: ArchShape, variant: str, ctx: int) -> int:
        # llama.cpp maps the file: its pages count in RSS while read but are page cache, which the
        # system evicts and reads again when memory is short (slower, not failing), so they are not
        # counted. Counted: an f16 KV cache, the output and compute buffers of one 512-token
        # micro-batch (its logits, attention scores), the scorer's blocks (read in place)
        from ...working_set import PROCESS_BASE_BYTES, kv_cache_bytes, scoring_bytes

        ubatch = min(ctx, 512)
        buffers = 4 * ubatch * (2 * arch.vocab_size + arch.num_attention_heads * ctx)
        return (
            PROCESS_BASE_BYTES
            + kv_cache_bytes(arch, ctx, 2)
            + buffers
            + scoring_bytes(arch, ctx, copies=False)
        )

    def nominal_bits(self, variant: str) -> int:
        return nominal_bits(variant)

    def available(self) -> bool:
        return find_spec("gguf") is not None and find_spec("llama_cpp") is not None

    def calibrates(self, config: GGUFConfig) -> bool:
        return config.needs_imatrix

    def parse_options(self, options: dict[str, Any]) -> GGUFConfig:
        return parse_options(options)

    def artifact_name(self, model_name: str, config: GGUFConfig) -> str:
        return f"{model_name}-GGUF"

    def variants(self, config: GGUFConfig) -> list[str]:
        return list(config.types)

    def card_tags(self, recipes):
        used = any(r.get("imatrix") not in (None, False, "off", "none", "no") for r in recipes.values())
        return ["imatrix"] if used else []

    def quantize(
        self,
        source,
        info,
        config: GGUFConfig,
        out_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress = no_progress,
        provenance: Provenance | None = None,
        device=None,
    ) -> list[str]:
        from .build import GGUFBuild

        build = GGUFBuild(
            source,
            info,
            config,
            Path(out_dir),
            overwrite=overwrite,
            progress=progress,
            provenance=provenance,
            device=device,
        )
        return build.run()

    def recognises(self, path: Path) -> str | None:
        return self.runtime if path.is_file() and path.suffix == ".gguf" else None

    def eval_targets(self, path: Path, manifest: Manifest, variant: str | None = None) -> list[EvalTarget]:
        """One target per type: its (first) file, which llama.cpp loads."""
        if path.is_file():
            return super().eval_targets(path, manifest, variant)
        targets = super().eval_targets(path, manifest, variant)
        from ...io import path_inside

        return [
            EvalTarget(
                path_inside(path, manifest.variants[t.variant].files[0], what=f"{path}: file of {t.variant}"),  # type: ignore[index]
                t.runtime,
                t.variant,
                path,
            )
            for t in targets
        ]

    def usage(self, ctx: UsageContext) -> str:
        from .usage import gguf_usage

        return gguf_usage(ctx)

    def write_test_double(self, folder: Path, model: str, variant: str, bits: int, **kw: Any):
        from .double import write_gguf_double

        return write_gguf_double(folder, model, variant, bits, **kw)


FORMAT = GGUFFormat()
