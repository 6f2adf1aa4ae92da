"""GPTQ and AWQ through GPTQModel (one backend, two formats).

``qwen3-quant quantize MODEL --format gptq|awq``: calibration from a named mix (``calib/``),
GPTQModel in a worker process, Qwen3-MoE expert coverage with a starved-expert policy, a standard
checkpoint named as Qwen's releases (``Qwen3-8B-GPTQ-Int4``, ``Qwen3-8B-AWQ``) with its manifest,
then validation through transformers + GPTQModel's kernels (:mod:`.runner`), on the CPU or a CUDA
device (``--device``; on CUDA, one decoder layer at a time on the GPU).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...catalog.architecture import ArchShape
from ...errors import UsageError
from ...working_set import gptq_quantise_peak_bytes
from ..base import (
    GiB,
    Progress,
    QuantFormat,
    Runtime,
    SizeEstimate,
    UsageContext,
    kept_tensor_bytes,
    largest_layer_params,
    linear_tensors,
    no_progress,
)
from .config import GPTQModelConfig, options_for, parse_options
from .libenv import LIBRARIES, NOISY_LOGGERS

if TYPE_CHECKING:
    from ...checkpoint import CheckpointInfo
    from ...provenance import Provenance
    from ...sources import ModelSource

_VARIANT = re.compile(r"^w(?P<bits>[2-8])(?:g(?P<group>-?\d+))?$", re.I)


def parse_variant(variant: str) -> tuple[int, int]:
    """``W4g128`` -> (4, 128)."""
    m = _VARIANT.match(variant.strip())
    if not m:
        raise UsageError(
            f"bad weight-only variant '{variant}'", hint="write it as W<bits>g<group>, e.g. W4g128"
        )
    return int(m["bits"]), int(m["group"] or 128)


def weight_only_bytes(arch: ArchShape, bits: int, group: int, *, g_idx: bool) -> int:
    """Packed int weights, fp16 scales and packed zero points per group, kept tensors in bf16."""
    total = kept_tensor_bytes(arch, 2)
    for t in linear_tensors(arch):
        out_f, in_f = t.shape
        groups = in_f // group if group > 0 else 1
        one = out_f * in_f * bits // 8  # qweight
        one += groups * out_f * 2  # scales (fp16)
        one += groups * out_f * bits // 8  # qzeros
        if g_idx:
            one += in_f * 4
        total += one * t.count
    return total


class _GPTQModelFormat(QuantFormat):
    extra = "gptq"
    cell_axis = "bits"
    runtimes = (
        Runtime(
            "gptqmodel",
            "qwen3_quant.formats.gptqmodel.runner:GPTQModelRunner",
            "transformers + GPTQModel kernels",
        ),
    )
    table_types = ("W4g128", "W8g128")
    hub_library = "transformers"
    noisy_loggers = NOISY_LOGGERS
    recipe_labels = {
        "group_size": "Group size",
        "sym": "Symmetric",
        "act_order": "Activation order",
        "desc_act": "Activation order",
    }
    g_idx = False
    gpu_quantise = True
    scratch_artifact_copies = 1.0  # GPTQModel's offload folder: the quantised modules until the save

    def nominal_bits(self, variant: str) -> int:
        return parse_variant(variant)[0]

    def available(self) -> bool:
        from .libenv import libraries_present

        return libraries_present(self.name)

    def calibrates(self, config: GPTQModelConfig) -> bool:
        return config.method != "rtn"

    def parse_options(self, options: dict[str, Any]) -> GPTQModelConfig:
        return parse_options(self.name, options)

    def artifact_name(self, model_name: str, config: GPTQModelConfig) -> str:
        return model_name + config.name_suffix()

    def variants(self, config: GPTQModelConfig) -> list[str]:
        return [config.variant]

    def quantize(
        self,
        source: ModelSource,
        info: CheckpointInfo,
        config: GPTQModelConfig,
        out_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress = no_progress,
        provenance: Provenance | None = None,
        device=None,
    ) -> list[str]:
        from .quantizer import quantize_artifact

        return quantize_artifact(
            source,
            info,
            config,
            Path(out_dir),
            fmt=self.name,
            overwrite=overwrite,
            progress=progress,
            provenance=provenance,
            device=device,
        )

    def recognises(self, path: Path) -> str | None:
        import json

        cfg = Path(path) / "config.json"
        if not (Path(path).is_dir() and cfg.is_file()):
            return None
        qc = json.loads(cfg.read_text()).get("quantization_config") or {}
        return self.runtime if qc.get("quant_method") == self.name else None

    def usage(self, ctx: UsageContext) -> str:
        from .usage import gptqmodel_usage

        return gptqmodel_usage(ctx)

    def write_test_double(self, folder: Path, model: str, variant: str, bits: int, **kw: Any):
        from .double import write_gptqmodel_double

        return write_gptqmodel_double(folder, model, variant, bits, method=self.name, **kw)

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        bits, group = parse_variant(variant)
        # GPTQModel reads one decoder layer at a time from the shards (checkpoint-backed loading)
        peak = gptq_quantise_peak_bytes(arch, samples=CALIB_SAMPLES_MAX, seq=CALIB_SEQ_MAX)
        return SizeEstimate(
            weight_only_bytes(arch, bits, group, g_idx=self.g_idx), peak, gpu_peak_bytes=gpu_working_set(arch)
        )


CALIB_SAMPLES_MAX, CALIB_SEQ_MAX = 128, 2048  # the calibration the estimates size for


def gpu_working_set(arch: ArchShape) -> int:
    """GPU memory GPTQModel needs to quantise on CUDA: it reads one decoder layer at a time from the
    checkpoint onto the GPU. On the GPU: the embedding table (the first forward),
    one layer in bf16, fp32 working copies (weight, quantised weight, error) of its largest linear,
    the Hessians of all its linears (fp32, in x in each), the layer's calibration inputs and
    outputs in bf16, and the CUDA context with allocator slack."""
    layer = largest_layer_params(arch)
    layer0 = [t for t in linear_tensors(arch) if t.layer == 0]
    largest_linear = max((t.shape[0] * t.shape[1] for t in layer0), default=0)
    hessians = sum(t.shape[1] ** 2 * 4 * t.count for t in layer0)
    acts = CALIB_SAMPLES_MAX * CALIB_SEQ_MAX * arch.hidden_size * 2 * 2
    embed = arch.vocab_size * arch.hidden_size * 2
    return int(2 * layer + 3 * 4 * largest_linear + hessians + acts + embed + 1 * GiB)


class GPTQFormat(_GPTQModelFormat):
    name = "gptq"
    libraries = LIBRARIES["gptq"]
    options = options_for("gptq")
    g_idx = True
    card_description = "GPTQ weight-only quantised safetensors (GPTQModel)"
    seconds_per_billion = 2400.0


class AWQFormat(_GPTQModelFormat):
    name = "awq"
    libraries = LIBRARIES["awq"]
    options = options_for("awq")
    table_types = ("W4g128",)
    card_description = "AWQ weight-only quantised safetensors (GPTQModel)"
    seconds_per_billion = 3000.0


GPTQ_FORMAT = GPTQFormat()
AWQ_FORMAT = AWQFormat()
