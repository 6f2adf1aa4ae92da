"""ONNX artifacts of the tiny models against transformers: logits, greedy decoding with the KV cache
in onnxruntime and onnxruntime-genai, what got quantised, and real file sizes against the estimate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _onnx_builds import onnx_artifact, onnx_file_bytes, prompt

from qwen3_quant.catalog import catalog
from qwen3_quant.eval.transformers_runner import TransformersRunner
from qwen3_quant.formats.onnx import graph, onnx_bytes
from qwen3_quant.formats.onnx.runner import OnnxRuntimeRunner, genai_generate

pytestmark = pytest.mark.slow

DENSE, MOE = "Qwen3-8B", "Qwen3-30B-A3B"  # tiny variants: untied dense; 16 experts, top 4
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def moe_with_dense_layer(tmp_path_factory):
    """A tiny Qwen3-MoE whose second layer is a dense MLP (``mlp_only_layers``)."""
    from qwen3_quant.testing.tiny import build_model, tiny_arch

    arch = dataclasses.replace(tiny_arch(catalog()[MOE].arch), mlp_only_layers=(1,))
    return build_model(arch, tmp_path_factory.mktemp("moe-mlp-only") / "tiny-moe-mlp-only", seed=3)


def _reference(src, ids):
    with TransformersRunner(src, ctx=512) as ref:
        return ref.logits(ids), list(ref.generate(ids, NEW_TOKENS).tokens)


def _check_parity(src, folder, tol):
    ids = prompt(src)
    ref_logits, ref_tokens = _reference(src, ids)
    with OnnxRuntimeRunner(folder, ctx=512) as r:
        logits = r.logits(ids)
        timing = r.generate(ids, NEW_TOKENS)
    assert logits.shape == ref_logits.shape and logits.dtype == np.float32
    diff = float(np.abs(logits - ref_logits).max())
    assert diff <= tol, f"max abs logit diff {diff}"
    assert list(timing.tokens) == ref_tokens
    assert genai_generate(folder, ids, NEW_TOKENS) == ref_tokens
    return diff


@pytest.mark.parametrize("name", [DENSE, MOE])
def test_fp32_matches_transformers(tiny_model, tmp_path_factory, name):
    src = tiny_model(name)
    folder = onnx_artifact(tmp_path_factory, src, "fp32")
    _check_parity(src, folder, 1e-3)


def test_moe_with_a_dense_layer_matches(moe_with_dense_layer, tmp_path_factory):
    folder = onnx_artifact(tmp_path_factory, moe_with_dense_layer, "fp32")
    ops = graph.summarise(folder)["ops"]
    assert ops["MoE"] == 1  # layer 0 sparse, layer 1 dense
    _check_parity(moe_with_dense_layer, folder, 1e-3)


@pytest.mark.parametrize("name", [DENSE, MOE])
def test_fp16_runs_on_the_cpu(tiny_model, tmp_path_factory, name):
    src = tiny_model(name)
    folder = onnx_artifact(tmp_path_factory, src, "fp16")
    _check_parity(src, folder, 1e-2)


def test_moe_int4_quantises_the_experts(tiny_model, tmp_path_factory):
    """QMoE holds the experts at 4 bits: their bytes drop to (0.5 + 4/32) / 4 of fp32 (block 32),
    the whole file as the estimate says; attention and lm_head are MatMulNBits, the router fp32."""
    import onnx

    src = tiny_model(MOE)
    f32, i4 = onnx_artifact(tmp_path_factory, src, "fp32"), onnx_artifact(tmp_path_factory, src, "int4")
    s = graph.summarise(i4)
    assert s["ops"]["QMoE"] == 2 and s["QMoE_bits"] == [4] and s["QMoE_block_size"] == [32]
    assert "MoE" not in s["ops"] and s["MatMulNBits_bits"] == [4]
    assert [m for m in s["float_matrices"] if "router" in m] == [
        "model.layers.0.moe.router.MatMul.weight",
        "model.layers.1.moe.router.MatMul.weight",
    ]

    def expert_bytes(folder, weight_suffixes):
        model = onnx.load(folder / "model.onnx", load_external_data=False)
        return sum(
            int({e.key: e.value for e in i.external_data}["length"])
            for i in model.graph.initializer
            if ".moe.experts." in i.name and i.name.endswith(weight_suffixes)
        )

    ratio = expert_bytes(i4, (".qweight", ".scales")) / expert_bytes(f32, ".weight")
    assert ratio == pytest.approx((0.5 + 4 / 32) / 4, rel=1e-6)
    a = _arch(src)
    assert onnx_file_bytes(i4) / onnx_file_bytes(f32) == pytest.approx(
        onnx_bytes(a, "int4") / onnx_bytes(a, "fp32"), rel=0.01
    )
    assert onnx_file_bytes(i4) < 0.36 * onnx_file_bytes(f32)


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("name", [DENSE, MOE])
def test_int_artifacts_keep_no_float_weight_matrix_but_the_router(
    tiny_model, tmp_path_factory, name, precision
):
    src = tiny_model(name)
    s = graph.summarise(onnx_artifact(tmp_path_factory, src, precision))
    bits = int(precision[3:])
    weights = [
        m
        for m in s["float_matrices"]
        if m not in ("cos_cache", "sin_cache") and not m.endswith(("scales", "_scale", ".bias"))
    ]
    assert all(".moe.router." in m for m in weights), weights
    assert s["MatMulNBits_bits"] == [bits] and s["GatherBlockQuantized_bits"] == [bits]
    if name == MOE:
        assert s["QMoE_bits"] == [bits]
    with OnnxRuntimeRunner(onnx_artifact(tmp_path_factory, src, precision), ctx=512) as r:
        ids = prompt(src)
        same = (r.logits(ids).argmax(-1) == _reference(src, ids)[0].argmax(-1)).mean()
    assert same > (0.85 if bits == 8 else 0.4)  # random, near-flat logits: int4 keeps about half


def _arch(src):
    from qwen3_quant.checkpoint import inspect_checkpoint

    return inspect_checkpoint(src).arch


@pytest.mark.parametrize(
    ("name", "precision"), [(DENSE, "int4"), (DENSE, "fp32"), (MOE, "int4"), (MOE, "fp32")]
)
def test_estimate_matches_real_files(tiny_model, tmp_path_factory, name, precision):
    src = tiny_model(name)
    real = onnx_file_bytes(onnx_artifact(tmp_path_factory, src, precision))
    est = onnx_bytes(_arch(src), precision)
    assert abs(est - real) / real < 0.01, f"estimate {est} vs real {real}"


def test_int4_options_reach_the_graph(tiny_model, tmp_path_factory):
    src = tiny_model(DENSE)
    folder = onnx_artifact(
        tmp_path_factory, src, "int4", block_size=128, quantizer="k_quant", accuracy_level=1
    )
    s = graph.summarise(folder)
    assert s["MatMulNBits_block_size"] == [128] and s["accuracy_level"] == [1]
    real, est = onnx_file_bytes(folder), onnx_bytes(_arch(src), "int4", 128)
    assert 0 < (real - est) / real < 0.04  # k-quant adds zero points the estimate leaves out
    with OnnxRuntimeRunner(folder, ctx=512) as r:
        assert np.isfinite(r.logits(prompt(src, 16))).all()
