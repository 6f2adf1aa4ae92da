"""MLX artifacts of the bundled micro models, in MLX itself: an unquantised (float32) conversion
matches transformers' fp32 logits and greedy tokens; ``quantize(..., "mlx", bits=4)`` makes,
validates (perplexity, KLD, speed with MLX's KV cache, gates) and publishes a loadable folder,
dense and MoE."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen3_quant.eval.evaluate import EvalOptions
from qwen3_quant.eval.transformers_runner import TransformersRunner
from qwen3_quant.formats.mlx.convert import convert_checkpoint
from qwen3_quant.formats.mlx.runner import MLXRunner

pytestmark = pytest.mark.slow

# float32 in both runtimes: they differ by the order of float additions only (measured 1.1e-5)
LOGIT_TOLERANCE = 1e-3


@pytest.fixture(params=["micro_dense", "micro_moe"])
def micro(request):
    return request.getfixturevalue(request.param)


def _prompt(src, n, seed=1):
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    return np.random.default_rng(seed).integers(0, min(vocab, 8000), n).tolist()


def test_unquantised_conversion_matches_transformers(micro, tmp_path):
    convert_checkpoint(micro, tmp_path / "f32", None, dtype="float32")
    ids = _prompt(micro, 64)
    with TransformersRunner(micro, ctx=512) as ref:
        ref_logits, ref_tokens = ref.logits(ids), list(ref.generate(ids, 16).tokens)
    with MLXRunner(tmp_path / "f32", ctx=512) as r:
        assert np.abs(r.logits(ids) - ref_logits).max() <= LOGIT_TOLERANCE
        assert list(r.generate(ids, 16).tokens) == ref_tokens  # through MLX's KV cache


def test_quantize_validate_and_publish_4bit(micro, tmp_path, cache_dir):
    from qwen3_quant.artifact import load_manifest
    from qwen3_quant.publish import publish
    from qwen3_quant.quantize import quantize

    opts = EvalOptions(ctx=256, max_tokens=1024, prompt_tokens=64, decode_tokens=8, repeats=1)
    res = quantize(str(micro), "mlx", bits=4, out_root=tmp_path / "out", eval_options=opts)
    folder = res.artifact_dir
    assert folder.name == f"{micro.name}-4bit" and res.variants == ["4bit"]
    (val,) = res.validations
    assert val.runtime == "mlx" and val.tokens_scored > 1000
    assert val.kld_mean is not None and val.kld_mean > 0  # really quantised, really compared
    assert val.decode_tps and val.decode_tps > 0 and val.peak_rss_bytes > 0
    assert val.passed, val.gates
    rec = load_manifest(folder)["variants"]["4bit"]
    assert rec["recipe"]["thinking_switch"] is True and rec["validation"]["passed"] is True
    assert 4.0 < rec["recipe"]["bits_per_weight"] < 5.5

    dest = tmp_path / "pub" / folder.name
    out = publish(folder, dest)
    meta = out.card.split("---")[1]
    for line in ("library_name: mlx", "- mlx", "base_model_relation: quantized", "base_model:"):
        assert line in meta, meta
    assert "mlx_lm.generate --model" in out.card and "enable_thinking" in out.card
    from mlx_lm import load  # the published folder loads as mlx-lm users load it

    model, tokenizer = load(str(dest))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, enable_thinking=False
    )
    assert "<think>" in tokenizer.decode(prompt)  # the switch wrote the empty think block
