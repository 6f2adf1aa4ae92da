"""Serving GPTQ and AWQ checkpoints the way users do: transformers with GPTQModel's kernels (and
optimum for GPTQ); on the CPU with fp32 activations, on a CUDA device with fp16 activations and
whatever GPU kernel GPTQModel selects (Marlin, ExLlama, Triton...), named in the result.

transformers 5 fuses Qwen3-MoE experts into ``mlp.experts.gate_up_proj`` / ``down_proj``; a
per-expert quantised checkpoint then loads with those missing and every ``experts.N.*`` tensor
unexpected, and the experts keep their random initialisation. ``defuser`` restores per-expert
modules before loading. The reference runner's loading check fails on any missing or unexpected
weight, so a load without the fix is reported, not scored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from ...errors import RuntimeLoadError
from ...eval.transformers_runner import TransformersRunner
from .libenv import import_gptqmodel, quiet

log = logging.getLogger(__name__)


@contextlib.contextmanager
def defused_qwen3_moe():
    """Load Qwen3-MoE with per-expert modules inside the block only.

    ``defuser`` swaps transformers' sparse-MoE class for the whole process; later fused loads in
    the same process (the reference model, the ONNX builder, the GGUF importance matrix) must get
    transformers' own class back.
    """
    from transformers.models.qwen3_moe import modeling_qwen3_moe as mod

    from ...errors import require

    defuser = require("defuser", "gptq")
    original = mod.Qwen3MoeSparseMoeBlock
    try:
        with quiet():
            defuser.replace_fused_blocks("qwen3_moe")
        yield
    finally:
        mod.Qwen3MoeSparseMoeBlock = original


def quant_kernels(model) -> list[str]:
    """The quantised-linear classes a loaded model runs (``MarlinQuantLinear``, ``TorchQuantLinear``)."""
    return sorted({type(m).__name__ for m in model.modules() if "QuantLinear" in type(m).__name__})


class GPTQModelRunner(TransformersRunner):
    runtime = "gptqmodel"
    compute_dtype = "float32"
    cuda_compute_dtype = "float16"  # what the GPU kernels (Marlin, ExLlama) take
    defuse_moe = True  # tests switch this off to prove the loading check catches random experts

    def _load(self):
        cfg = json.loads((Path(self.path) / "config.json").read_text())
        qc = cfg.get("quantization_config") or {}
        if qc.get("quant_method") not in ("gptq", "awq"):
            raise RuntimeLoadError(
                f"{Path(self.path).name} is not a GPTQ or AWQ checkpoint",
                hint="evaluate it with the transformers runtime",
            )
        import_gptqmodel()
        moe = (cfg.get("text_config") or cfg).get("model_type") == "qwen3_moe"
        with defused_qwen3_moe() if self.defuse_moe and moe else contextlib.nullcontext(), quiet():
            model = super()._load()
        # GPTQModel torch.compiles every quantised layer's dequantisation; on MoE models torch hits
        # its recompile limit, warns at length and runs the rest eagerly. Keep that out of the output
        # unless the user asked torch for logs.
        dynamo = logging.getLogger("torch._dynamo")
        if dynamo.level == logging.NOTSET and not os.environ.get("TORCH_LOGS"):
            dynamo.setLevel(logging.ERROR)
        kernels = quant_kernels(model)
        self.backend = f"{'+'.join(kernels) or 'no quantised linear'} ({self.dtype} on {self.device.torch})"
        return model
