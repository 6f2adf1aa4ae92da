"""Validation's memory estimate: from the catalog's shapes, flat in depth, in every estimate."""

import dataclasses

from qwen3_quant.catalog import catalog
from qwen3_quant.eval.options import EvalOptions
from qwen3_quant.formats import get_format
from qwen3_quant.models_table import estimate_rows
from qwen3_quant.working_set import reference_peak_bytes, validation_estimate


def test_reference_estimate_does_not_grow_with_depth_but_with_tokens():
    a = catalog()["Qwen3-8B"].arch
    deep = dataclasses.replace(a, num_hidden_layers=4 * a.num_hidden_layers)
    assert reference_peak_bytes(deep, n_tokens=16384, ctx=2048) == reference_peak_bytes(
        a, n_tokens=16384, ctx=2048
    )
    assert reference_peak_bytes(a, n_tokens=65536, ctx=2048) > reference_peak_bytes(
        a, n_tokens=16384, ctx=2048
    )
    fp32 = reference_peak_bytes(a, n_tokens=16384, ctx=2048)
    assert reference_peak_bytes(a, n_tokens=16384, ctx=2048, dtype="bfloat16") < fp32 < 4e9


def test_qwen3_235b_gguf_q4_k_m_with_imatrix_and_validation_fits_128_gb():
    a = catalog()["Qwen3-235B-A22B"].arch
    gguf = get_format("gguf")
    assert gguf.estimate(a, "Q4_K_M").quantise_peak_bytes < 128e9
    assert validation_estimate(gguf, a, "Q4_K_M") < 128e9
    # an 8B validation on CPU fits a 16 GB laptop
    assert validation_estimate(gguf, catalog()["Qwen3-8B"].arch, "Q4_K_M") < 16e9


def test_estimates_follow_the_evaluation_options():
    a = catalog()["Qwen3-8B"].arch
    gguf = get_format("gguf")
    small = validation_estimate(gguf, a, "Q4_K_M", EvalOptions(max_tokens=1024, ctx=512))
    assert small < validation_estimate(gguf, a, "Q4_K_M")


def test_models_table_has_validation_memory():
    rows = estimate_rows(["gguf"])
    assert rows and all(r["validate_peak_bytes"] > 0 for r in rows)
