"""The evaluation core end to end on real (micro and tiny) models with the transformers runner."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from qwen3_quant.eval.evaluate import EvalOptions, evaluate
from qwen3_quant.eval.gates import default_gates

OPTS = dict(ctx=128, max_tokens=700, prompt_tokens=64, decode_tokens=8, repeats=1)


def _perturbed_copy(src, dst, scale):
    """A copy of a checkpoint with Gaussian noise added to every matrix (a stand-in for quantisation)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    noisy = {
        k: (v.float() + scale * v.float().std() * torch.randn(v.shape, generator=g)).to(v.dtype)
        if v.ndim == 2
        else v
        for k, v in tensors.items()
    }
    save_file(noisy, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.mark.slow
def test_model_against_itself_has_zero_kld(micro_dense, cache_dir):
    res = evaluate(micro_dense, options=EvalOptions(**OPTS), gates=default_gates(16))
    assert res.base == str(micro_dense)
    assert res.tokens == 700 and res.windows == 6 and res.tokens_scored == 700 - 6
    assert np.isfinite(res.perplexity) and res.perplexity == pytest.approx(res.base_perplexity, rel=1e-6)
    assert res.kld_mean == pytest.approx(0.0, abs=1e-6) and res.top1_agreement == 1.0
    assert res.prefill_tps > 0 and res.decode_tps > 0 and res.peak_rss_bytes > 0
    assert res.passed is True
    assert list(cache_dir.rglob("ref-*.npz")), "the reference log-probabilities are stored"


@pytest.mark.slow
def test_perturbed_model_shows_kld_and_fails_tight_gates(micro_dense, cache_dir, tmp_path):
    noisy = _perturbed_copy(micro_dense, tmp_path / "noisy", 0.5)
    res = evaluate(noisy, base=micro_dense, options=EvalOptions(**OPTS, speed=False), gates=default_gates(16))
    assert res.kld_mean > 1e-3 and res.top1_agreement < 1.0
    assert res.perplexity != pytest.approx(res.base_perplexity, rel=1e-4)
    assert res.passed is False and any(not g["passed"] for g in res.gates)
    # the reference was computed once and reused: a second evaluation finds the stored file
    n_refs = len(list(cache_dir.rglob("ref-*.npz")))
    evaluate(noisy, base=micro_dense, options=EvalOptions(**OPTS, speed=False))
    assert len(list(cache_dir.rglob("ref-*.npz"))) == n_refs == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Qwen3-4B", "Qwen3-235B-A22B"])
def test_tiny_models_evaluate(tiny_model, name, cache_dir):
    res = evaluate(tiny_model(name), options=EvalOptions(ctx=64, max_tokens=200, speed=False))
    assert np.isfinite(res.perplexity) and res.kld_mean == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_eval_cli_prints_table_and_writes_json(micro_moe, cache_dir, tmp_path):
    from qwen3_quant.cli import main

    out = tmp_path / "r.json"
    r = CliRunner().invoke(
        main,
        [
            "eval",
            "Qwen3-Micro-MoE",
            "--ctx",
            "128",
            "--max-tokens",
            "400",
            "--prompt-tokens",
            "32",
            "--decode-tokens",
            "4",
            "--repeats",
            "1",
            "--json-out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        "Qwen3-Micro-MoE" in r.output
        and "decode tok/s" in r.output.replace("\n", " ")
        or "decode" in r.output
    )
    data = json.loads(out.read_text())["results"][0]
    assert data["kld_mean"] == pytest.approx(0.0, abs=1e-6) and data["tokens_scored"] == 400 - 4
    assert data["decode_tps"] > 0


def test_eval_of_missing_path_is_clear(tmp_path):
    from qwen3_quant.cli import main

    r = CliRunner().invoke(main, ["eval", str(tmp_path / "nothing.gguf")])
    assert r.exit_code != 0 and "Traceback" not in r.output
