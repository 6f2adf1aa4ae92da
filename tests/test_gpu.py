"""On a CUDA device (marker ``gpu``; skipped without one): every format end to end on the micro
models with ``device="cuda"``, and the GPU results against the CPU's.

Tolerances, stated once: the reference runner's fp32 logits on CUDA within 1e-2 (abs) of the CPU's;
the importance matrix's squared sums within 1e-3 (relative) with equal token counts; a GPTQ / AWQ
artifact made on the GPU scores a KLD within 50 % (or 2e-3 absolute) of the one made on the CPU,
both scored in the same runtime on the GPU (the solver's float order differs between devices,
so the two artifacts are not bit-identical). scripts/gpu_check.sh runs this file.
"""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_quant.artifact import Manifest
from qwen3_quant.eval.evaluate import EvalOptions
from qwen3_quant.quantize import quantize

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

GPU_EVAL = EvalOptions(max_tokens=2048, ctx=256, prompt_tokens=64, decode_tokens=8, repeats=1, device="cuda")


def _eval(tmp_path) -> EvalOptions:
    from dataclasses import replace

    return replace(GPU_EVAL, reference_dir=tmp_path / "ref")


def test_cuda_resolves_with_its_facts():
    from qwen3_quant.device import resolve_device

    dev = resolve_device("cuda")
    assert dev.torch == "cuda:0" and dev.facts["name"] and dev.facts["free_vram_bytes"] > 0
    assert resolve_device("auto") == dev


def test_reference_logits_on_cuda_match_the_cpu(micro_dense):
    from qwen3_quant.device import CPU, resolve_device
    from qwen3_quant.eval.transformers_runner import TransformersRunner

    ids = list(range(5, 133))
    with TransformersRunner(micro_dense, ctx=256, device=CPU) as r:
        cpu = r.logits(ids)
    with TransformersRunner(micro_dense, ctx=256, device=resolve_device("cuda")) as r:
        gpu = r.logits(ids)
        assert r.backend == "float32 on cuda:0"
    assert np.abs(cpu - gpu).max() < 1e-2


@pytest.mark.parametrize("which", ["micro_dense", "micro_moe"])
def test_imatrix_on_cuda_matches_the_cpu(which, request):
    from qwen3_quant.calib import load_mix
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.device import CPU, resolve_device
    from qwen3_quant.formats.gguf.imatrix import collect_imatrix

    model = request.getfixturevalue(which)
    samples = load_mix("builtin").build(model, samples=6, seq_len=128).samples
    info = inspect_checkpoint(model)
    cpu = collect_imatrix(info, samples, device=CPU)
    gpu = collect_imatrix(info, samples, device=resolve_device("cuda"))
    assert set(cpu.entries) == set(gpu.entries)
    for name, e in cpu.entries.items():
        assert np.array_equal(e.counts, gpu.entries[name].counts), name
        assert np.allclose(gpu.entries[name].sums, e.sums, rtol=1e-3, atol=1e-6), name


@pytest.mark.parametrize("fmt", ["gptq", "awq"])
def test_gptqmodel_on_cuda_matches_the_cpu(fmt, tmp_path, micro_dense):
    kld = {}
    for made_on in ("cpu", "cuda"):
        res = quantize(
            str(micro_dense),
            fmt,
            out_dir=tmp_path / made_on,
            device=made_on,
            eval_options=_eval(tmp_path),
            calib="builtin",
            calib_samples=16,
        )
        (v,) = res.validations
        assert v.device["device"] == "cuda:0"  # both scored on the GPU
        assert "cuda:0" in v.backend and "QuantLinear" in v.backend, v.backend
        m = Manifest.read(res.artifact_dir)
        rec = m.variant(res.variants[0])
        assert rec.provenance.quantised_on["device"] == ("cpu" if made_on == "cpu" else "cuda:0")
        if made_on == "cuda":
            assert rec.details["worker_peak_vram_bytes"] > 0
        assert v.passed, v.gates
        kld[made_on] = v.kld_mean
    assert abs(kld["cuda"] - kld["cpu"]) <= max(0.5 * kld["cpu"], 2e-3), kld


def test_gptq_moe_on_cuda(tmp_path, micro_moe):
    res = quantize(
        str(micro_moe),
        "gptq",
        out_dir=tmp_path / "moe",
        device="cuda",
        eval_options=_eval(tmp_path),
        calib="builtin",
        calib_samples=16,
    )
    (v,) = res.validations
    assert v.passed, v.gates
    rec = Manifest.read(res.artifact_dir).variant(res.variants[0])
    assert rec.recipe["moe"]["routed_tokens_per_expert"]["max"] > 0


def test_gguf_on_cuda(tmp_path, micro_dense):
    from qwen3_quant.formats.gguf.llama import lib

    res = quantize(
        str(micro_dense),
        "gguf",
        out_dir=tmp_path / "gguf",
        device="cuda",
        eval_options=_eval(tmp_path),
        types=["Q4_K_M"],
        calib="builtin",
        calib_samples=16,
    )
    (v,) = res.validations
    assert v.passed, v.gates
    if lib().llama_supports_gpu_offload():
        assert "offloaded to cuda:0" in v.backend
    else:
        assert "no GPU offload" in v.backend


def test_onnx_on_cuda(tmp_path, micro_dense):
    pytest.importorskip("onnxruntime_genai")
    ort = pytest.importorskip("onnxruntime")

    res = quantize(
        str(micro_dense), "onnx", out_dir=tmp_path / "onnx", device="cuda", eval_options=_eval(tmp_path)
    )
    (v,) = res.validations
    assert v.passed, v.gates
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert v.backend == "CUDAExecutionProvider on cuda:0"
    else:
        assert "no CUDA provider" in v.backend
