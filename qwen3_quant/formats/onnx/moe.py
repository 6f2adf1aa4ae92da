"""Qwen3-MoE for onnxruntime, built from onnxruntime-genai's graph builder.

The builder knows Qwen3 (attention with q_norm/k_norm, GroupQueryAttention with the KV cache,
MatMulNBits, tied embeddings) and has MoE/QMoE primitives for other models, but rejects
``Qwen3MoeForCausalLM``. This module adds it: the decoder is the builder's Qwen3 decoder, and every
sparse layer becomes one com.microsoft ``MoE`` node (fp32/fp16) or ``QMoE`` node (int4/int8 experts,
block-wise, quantised here at build time). Qwen3-MoE's routing (softmax over the router logits, top-k,
renormalised when ``norm_topk_prob``) is the op's ``normalize_routing_weights``; the experts'
``silu(gate) * up`` is its SwiGLU with alpha 1 and beta 0 on interleaved gate/up rows. Dense layers
(``mlp_only_layers``, ``decoder_sparse_step``) keep the builder's dense MLP. The router stays fp32.

Imported only when an MoE model is converted: importing it loads torch and the builder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnxruntime_genai.models  # noqa: F401  (puts the builder's modules on sys.path)
import onnxruntime_genai.models.builder as gb
from builders.qwen import Qwen3Model

GENAI_MODEL_TYPE = "qwen3"  # onnxruntime-genai serves any Qwen3 decoder graph as this type


class Qwen3MoeBuilderModel(Qwen3Model):
    def __init__(self, config, io_dtype, onnx_dtype, ep, cache_dir, extra_options):
        super().__init__(config, io_dtype, onnx_dtype, ep, cache_dir, extra_options)
        self.moe_attrs["activation_type"] = "swiglu"
        self.moe_attrs["swiglu_fusion"] = 1  # gate/up rows interleaved
        self.moe_attrs["activation_alpha"] = 1.0
        self.moe_attrs["activation_beta"] = 0.0
        self.moe_attrs["normalize_routing_weights"] = bool(getattr(config, "norm_topk_prob", True))
        self.moe_intermediate_size = int(config.moe_intermediate_size)

    def get_moe_module(self, layer_id, layer):
        return layer.mlp

    def make_moe(self, layer_id, moe, root_input):
        if not hasattr(moe, "experts"):  # a dense layer of an MoE model
            return self.make_mlp(layer_id, moe, root_input)
        return super().make_moe(layer_id, moe, root_input)

    def make_moe_preprocessing(self, layer_id, moe, root_input):
        self.make_interleaved_swiglu_moe_preprocessing(layer_id, moe)

    def make_moe_router(self, layer_id, moe, root_input):
        base = f"/model/layers.{layer_id}/moe"
        matmul = self.make_matmul(moe.gate, f"{base}/router/MatMul", root_input)
        self.make_reshape(
            f"{base}/router/Reshape",
            [f"{matmul}/output_0", f"/model/constants/INT64/{[-1, self.moe_attrs['num_experts']]}"],
            dtype=self.io_dtype,
            shape=self.make_moe_router_shape(),
        )

    def make_moe_subgraph(self, layer_id, moe, root_input):
        base = f"/model/layers.{layer_id}/moe"
        op = self.moe_attrs["op_type"]
        names = self.make_moe_expert_names(layer_id)
        name = f"{base}/{op}"
        self.make_moe_op(
            name,
            root_input=root_input,
            router_probs=f"{base}/router/Reshape/output_0",
            weight1=names["gate_up_weight"],
            scales1=names["gate_up_scales"] if op == "QMoE" else "",
            bias1=names["gate_up_bias"],
            weight2=names["down_weight"],
            scales2=names["down_scales"] if op == "QMoE" else "",
            bias2=names["down_bias"],
        )
        self.layernorm_attrs["skip_input"] = f"{name}/output_0"


def build_with(
    cls,
    input_path: Path,
    out: Path,
    precision: str,
    ep: str,
    cache_dir: Path,
    options: dict,
    *,
    genai_type: str | None = None,
    prepare=None,
) -> None:
    """What the builder's ``create_model`` does, with the builder class ``cls``; ``prepare(model)``
    runs before the graph is made, and ``genai_type`` replaces genai_config.json's model type."""
    options = dict(options)
    effective = options.pop("_effective_builder_config", None)
    if effective is not None:
        precision = effective.precision
    hf = options.pop("hf_details")
    config = hf["hf_config"]
    io_dtype = gb.set_io_dtype(precision, ep, options)
    onnx_dtype = gb.set_onnx_dtype(precision, options)
    os.makedirs(out, exist_ok=True)
    os.makedirs(cache_dir, exist_ok=True)
    model = cls(config, io_dtype, onnx_dtype, ep, str(cache_dir), options)
    if prepare is not None:
        prepare(model)
    model.make_model(str(input_path))
    model.save_model(str(out))
    model.make_genai_config(config, hf["extra_kwargs"], str(out))
    model.save_processing(hf["hf_name"], hf["extra_kwargs"], str(out))
    if genai_type is not None:
        cfg_path = Path(out) / "genai_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["model"]["type"] = genai_type
        cfg_path.write_text(json.dumps(cfg, indent=4) + "\n")


def create_qwen3_moe(src: Path, out: Path, precision: str, ep: str, cache_dir: Path, options: dict) -> None:
    """What the builder's ``create_model`` does for the models it knows, for Qwen3-MoE."""
    build_with(Qwen3MoeBuilderModel, src, out, precision, ep, cache_dir, options, genai_type=GENAI_MODEL_TYPE)
