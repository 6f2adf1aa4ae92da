"""ONNX artifacts of the bundled micro models: fp32 parity with transformers, and the int8 / int4
artifacts validated in onnxruntime against their default gates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _onnx_builds import onnx_artifact, prompt

from qwen3_quant.artifact import load_manifest
from qwen3_quant.eval.evaluate import EvalOptions
from qwen3_quant.eval.transformers_runner import TransformersRunner
from qwen3_quant.formats.onnx.runner import OnnxRuntimeRunner, genai_generate
from qwen3_quant.validate import validate_artifact

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def held_out_text(micro_dense, shared_data, tmp_path_factory):
    """The Gutenberg book the micro models did not train on (their training.json names it)."""
    from qwen3_quant.textdata import read_text, strip_gutenberg

    book = json.loads((micro_dense / "training.json").read_text()).get("held_out_book")
    path = shared_data / "corpus-en" / "gutenberg" / f"{book}.txt"
    if not book or not path.is_file():
        pytest.skip("the micro models' held-out book is not in shared/data")
    out = tmp_path_factory.mktemp("text") / "held-out.txt"
    out.write_text(strip_gutenberg(read_text(path)))
    return out


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory):
    """One store of reference log-probabilities for the module: int8 and int4 share each model's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN3_QUANT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(params=["micro_dense", "micro_moe"])
def micro(request):
    return request.getfixturevalue(request.param)


def test_fp32_matches_transformers(micro, tmp_path_factory):
    folder = onnx_artifact(tmp_path_factory, micro, "fp32")
    ids = prompt(micro, 64, seed=1)
    with TransformersRunner(micro, ctx=512) as ref:
        ref_logits, ref_tokens = ref.logits(ids), list(ref.generate(ids, 16).tokens)
    with OnnxRuntimeRunner(folder, ctx=512) as r:
        assert np.abs(r.logits(ids) - ref_logits).max() <= 1e-3
        assert list(r.generate(ids, 16).tokens) == ref_tokens
    assert genai_generate(folder, ids, 16) == ref_tokens


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_int_artifacts_pass_their_gates(micro, precision, held_out_text, tmp_path_factory, reference_cache):
    folder = onnx_artifact(tmp_path_factory, micro, precision)
    opts = EvalOptions(text=str(held_out_text), ctx=512, max_tokens=3072, speed=False)
    (res,) = validate_artifact(folder, precision, options=opts)
    bits = load_manifest(folder)["variants"][precision]["recipe"]["bits"]
    assert bits == int(precision[3:])
    assert res.runtime == "onnxruntime" and res.tokens_scored > 3000
    assert res.kld_mean is not None and res.kld_mean > 0  # really quantised, really compared
    assert res.passed, res.gates
    assert load_manifest(folder)["variants"][precision]["validation"]["passed"] is True
