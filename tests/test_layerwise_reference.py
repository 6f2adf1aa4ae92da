"""The reference computed a decoder layer at a time equals the whole-model reference, and its
peak memory does not grow with the model's depth."""

import json
import subprocess
import sys

import numpy as np
import pytest

from qwen3_quant.eval.evaluate import _tokenize
from qwen3_quant.eval.layerwise_reference import layerwise_reference
from qwen3_quant.eval.protocol import make_windows
from qwen3_quant.eval.reference import score_windows
from qwen3_quant.eval.runner import open_runner
from qwen3_quant.textdata import builtin_text
from qwen3_quant.working_set import reference_peak_bytes


def _whole_and_layerwise(model, n_tokens=400, ctx=96, k=16, **kw):
    tokens = _tokenize(model, builtin_text(), n_tokens)
    windows = make_windows(len(tokens), ctx)
    with open_runner(model, ctx=ctx, runtime="transformers") as r:
        whole = score_windows(r, tokens, windows, keep_topk=k)
    return whole, layerwise_reference(model, tokens, windows, k=k, **kw)


def _assert_same(whole, lw, atol=1e-5):
    np.testing.assert_allclose(lw.nll, whole.nll, atol=atol)
    np.testing.assert_allclose(lw.topk_lp, whole.topk_lp, atol=atol)
    # tokens of equal probability may be listed in either order; nothing else differs
    assert (lw.topk_idx == whole.topk_idx).mean() > 0.999


@pytest.mark.parametrize("fixture", ["micro_dense", "micro_moe"])
def test_equals_whole_model_on_micro_models(fixture, request):
    # a head slice smaller than the vocabulary exercises the streamed log-softmax and embeddings
    whole, lw = _whole_and_layerwise(request.getfixturevalue(fixture), dtype="float32", slice_rows=1000)
    _assert_same(whole, lw)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Qwen3-4B", "Qwen3-235B-A22B"])
def test_equals_whole_model_on_tiny_models(tiny_model, name):
    whole, lw = _whole_and_layerwise(tiny_model(name), n_tokens=200, dtype="float32", slice_rows=3000)
    _assert_same(whole, lw)


def test_bf16_layers_stay_close_to_fp32(micro_dense):
    whole, lw = _whole_and_layerwise(micro_dense, dtype="bfloat16")
    assert not np.array_equal(lw.nll, whole.nll), "bf16 layers compute differently"
    assert abs(np.mean(lw.nll) - np.mean(whole.nll)) < 0.01
    assert (lw.topk_idx[:, 0] == whole.topk_idx[:, 0]).mean() > 0.97


_PEAK = """
import json, sys
from pathlib import Path
import numpy as np
from qwen3_quant.eval.protocol import make_windows
from qwen3_quant.eval.layerwise_reference import layerwise_reference
from qwen3_quant.eval.reference import score_windows
from qwen3_quant.eval.runner import open_runner
model, mode = Path(sys.argv[1]), sys.argv[2]
tokens = np.random.default_rng(0).integers(0, 8000, 256)
windows = make_windows(len(tokens), 128)
if mode == "layers":
    layerwise_reference(model, tokens, windows, k=8, dtype="float32")
else:
    with open_runner(model, ctx=128, runtime="transformers") as r:
        score_windows(r, tokens, windows, keep_topk=8)
from qwen3_quant.io import peak_rss_bytes
print(json.dumps(peak_rss_bytes()))
"""


def _peak(model, mode) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(model), mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_stays_flat_as_depth_grows(tmp_path):
    """Same width, 2 and 10 decoder layers (36 MB of fp32 weights a layer, 285 MB more in all):
    the layer-at-a-time reference's peak grows by less than one layer."""
    import dataclasses

    from qwen3_quant.catalog import catalog
    from qwen3_quant.testing.tiny import build_model, tiny_arch

    arch = tiny_arch(catalog()["Qwen3-8B"].arch, layers=2, hidden=1024)
    shallow = build_model(arch, tmp_path / "L2")
    deep = build_model(dataclasses.replace(arch, num_hidden_layers=10), tmp_path / "L10")
    layer_bytes = 4 * (2 * 1024 * 1024 + 2 * 1024 * 256 + 3 * 1024 * 2048)
    small, big = _peak(shallow, "layers"), _peak(deep, "layers")
    assert big - small < layer_bytes
    # the estimate `models` and `build --plan` use covers the measured peak, without gross excess
    est = reference_peak_bytes(dataclasses.replace(arch, num_hidden_layers=10), n_tokens=256, ctx=128)
    assert big <= est < big + 0.5e9, (big, est)
