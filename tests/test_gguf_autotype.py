"""GGUF automatic mixes (--type auto:...): spelling, the budgeted choice on toy numbers, the
weighted error, and one real mix written by llama.cpp with a type per tensor."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_quant.errors import UsageError
from qwen3_quant.formats.gguf.autotype import Option, allocate, mean_kld, parse_auto, weighted_error
from qwen3_quant.formats.gguf.config import nominal_bits, parse_options
from qwen3_quant.formats.gguf.naming import parse_gguf_file_name
from qwen3_quant.formats.gguf.types import normalise_type


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("auto:4.5bpw", "AUTO_4.5BPW"), ("AUTO-5", "AUTO_5BPW"), ("auto:q4_k_m", "AUTO_Q4_K_M")],
)
def test_auto_spellings_have_one_canonical_name_that_file_names_read_back(spelling, canonical):
    assert normalise_type(spelling) == canonical and parse_auto(canonical) == parse_auto(spelling)
    parsed = parse_gguf_file_name(f"Qwen3-8B-{canonical}-00001-of-00002.gguf")
    assert parsed is not None and (parsed.model, parsed.type, parsed.shard) == ("Qwen3-8B", canonical, 1)


def test_bad_auto_requests_are_refused_before_any_work():
    for bad in ("auto:1bpw", "auto:F16", "auto:Q9"):
        with pytest.raises(UsageError):
            normalise_type(bad)
    with pytest.raises(UsageError, match="--no-imatrix"):
        parse_options({"types": "auto:Q4_K_M", "imatrix": False})
    assert nominal_bits("AUTO_Q3_K_M") == 3 and nominal_bits("AUTO_4.5BPW") == 4


def _opts(*pairs):
    return [Option(t, b, e) for t, b, e in pairs]


def test_allocate_spends_the_budget_where_error_falls_most_per_byte():
    options = {
        # "a" gains a lot from its first upgrade, "b" little
        "a": _opts(("Q2_K", 10, 100.0), ("Q4_K", 20, 10.0), ("Q8_0", 40, 9.0)),
        "b": _opts(("Q2_K", 10, 20.0), ("Q4_K", 20, 15.0), ("Q8_0", 40, 1.0)),
    }
    pick = allocate(options, 30)
    assert {k: v.ggml_type for k, v in pick.items()} == {"a": "Q4_K", "b": "Q2_K"}
    assert sum(o.nbytes for o in pick.values()) <= 30
    big = allocate(options, 80)
    assert {k: v.ggml_type for k, v in big.items()} == {"a": "Q8_0", "b": "Q8_0"}


def test_allocate_uses_options_off_the_convex_hull_when_they_fit_better():
    # Q3_K is dominated (bigger and worse than Q2_K); Q4_K lies under the hull of Q2_K -> Q8_0, but
    # when Q8_0 does not fit it is the best that does (a hull walk would stay at Q2_K)
    options = {"t": _opts(("Q2_K", 10, 50.0), ("Q3_K", 12, 60.0), ("Q4_K", 20, 45.0), ("Q8_0", 30, 0.0))}
    assert allocate(options, 30)["t"].ggml_type == "Q8_0"
    assert allocate(options, 25)["t"].ggml_type == "Q4_K"
    assert allocate(options, 11)["t"].ggml_type == "Q2_K"
    with pytest.raises(ValueError, match="below the smallest"):
        allocate(options, 5)


def test_allocate_finds_the_least_total_error_that_fits_on_random_toy_problems():
    import itertools

    rng = np.random.default_rng(0)
    for trial in range(40):
        options = {}
        for t in range(4):
            sizes = np.sort(rng.integers(5, 60, size=3)) + np.arange(3)
            errs = np.sort(rng.uniform(0, 100, size=3))[::-1]
            options[f"t{t}"] = _opts(
                *((f"T{k}", int(b), float(e)) for k, (b, e) in enumerate(zip(sizes, errs, strict=True)))
            )
        budget = int(rng.integers(sum(o[0].nbytes for o in options.values()), 200))
        best = min(
            sum(o.error for o in combo)
            for combo in itertools.product(*options.values())
            if sum(o.nbytes for o in combo) <= budget
        )
        pick = allocate(options, budget, resolution=budget)  # one byte per step: exact
        assert sum(o.nbytes for o in pick.values()) <= budget
        assert sum(o.error for o in pick.values()) == pytest.approx(best), trial
        coarse = allocate(options, budget, resolution=16)  # coarse steps: still within the budget
        assert sum(o.nbytes for o in coarse.values()) <= budget


def test_weighted_error_weights_columns_and_experts():
    w = np.zeros((2, 3, 4), dtype=np.float32)  # 2 experts x 3 rows x 4 columns
    q = w.copy()
    q[0, :, 1] = 1.0  # expert 0, column 1: 3 rows off by 1
    q[1, 0, 3] = 2.0  # expert 1, column 3: one row off by 2
    imp = np.array([[0, 10, 0, 0], [0, 0, 0, 0.5]], dtype=np.float32)
    assert weighted_error(w, q, imp.reshape(-1)) == pytest.approx(10 * 3 + 0.5 * 4)
    assert weighted_error(w, q, None) == pytest.approx(3 + 4)


def test_mean_kld_is_zero_against_itself_and_positive_otherwise():
    logits = np.random.default_rng(0).normal(size=(5, 16))
    ref = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert mean_kld(ref, logits) == pytest.approx(0.0, abs=1e-12)
    assert mean_kld(ref, logits + np.eye(16)[None, 3].repeat(5, 0)) > 1e-3


@pytest.mark.slow
def test_auto_mix_of_the_micro_model_is_written_by_llama_cpp_within_budget(
    micro_dense, tmp_path, cache_dir, monkeypatch
):
    """The CLI path end to end: a file no larger than Q4_K_M's, a type per tensor as recorded,
    loaded and run by llama.cpp; a second budget in the same run reuses the measurement."""
    import json

    import gguf

    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.gguf.build import GGUFBuild
    from qwen3_quant.formats.gguf.runner import LlamaCppRunner
    from qwen3_quant.sources import resolve_model

    src = resolve_model(str(micro_dense))
    cfg = parse_options({"types": "Q4_K_M,auto:Q4_K_M,auto:Q3_K_M", "calib": "builtin", "calib_samples": 4})
    GGUFBuild(src, inspect_checkpoint(src.path), cfg, tmp_path / "out").run()
    out = tmp_path / "out"
    q4, auto = out / "Qwen3-Micro-Q4_K_M.gguf", out / "Qwen3-Micro-AUTO_Q4_K_M.gguf"
    assert auto.stat().st_size <= q4.stat().st_size
    assert (out / "Qwen3-Micro-AUTO_Q3_K_M.gguf").stat().st_size < auto.stat().st_size
    recipe = json.loads((out / "qwen3_quant.json").read_text())["variants"]["AUTO_Q4_K_M"]["recipe"]
    written = {
        t.name: gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(str(auto)).tensors
    }
    assert recipe["auto_tensor_types"] and all(
        written[n] == t for n, t in recipe["auto_tensor_types"].items()
    )
    assert len(set(recipe["auto_chosen_counts"])) >= 2  # a real mix, not one type everywhere
    assert "KL divergence measured in llama.cpp" in recipe["auto_sensitivity"]
    with LlamaCppRunner(auto, ctx=64, threads=1) as r:
        assert np.isfinite(r.logits(list(range(100, 132)))).all()

    # a later run with another budget reads the kept measurement instead of measuring again
    import qwen3_quant.formats.gguf.build as build_module

    def measured_again(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(build_module, "measure_sensitivity", measured_again)
    cfg = parse_options({"types": "auto:7bpw", "calib": "builtin", "calib_samples": 4})
    GGUFBuild(src, inspect_checkpoint(src.path), cfg, out).run()
    assert (out / "Qwen3-Micro-AUTO_7BPW.gguf").stat().st_size > auto.stat().st_size  # Q4_K_M: ~6 bpw here


def test_kld_windows_are_spread_over_every_source_of_the_calibration_set():
    from qwen3_quant.formats.gguf.autotype import spread_windows

    # a calibration set lists each source's samples together: 8 prose, 8 chat, 8 code, 8 tools
    samples = [[src * 100 + i] * 10 for src in range(4) for i in range(8)]
    windows = spread_windows(samples, 4, 3)
    assert [w[0] // 100 for w in windows] == [0, 1, 2, 3] and all(len(w) == 3 for w in windows)
    assert len(spread_windows(samples, 16, 5)) == 16
    assert spread_windows(samples[:2], 4, 5) == [[0] * 5, [1] * 5]


def test_models_table_estimates_automatic_mixes_from_their_budget():
    from qwen3_quant.catalog import catalog
    from qwen3_quant.formats.gguf.types import estimate_file_size

    for name in ("Qwen3-8B", "Qwen3-30B-A3B"):
        a = catalog()[name].arch
        q4, q5 = estimate_file_size(a, "Q4_K_M", has_imatrix=True), estimate_file_size(a, "Q5_K_M")
        assert estimate_file_size(a, "AUTO_Q4_K_M") == q4
        assert q4 < estimate_file_size(a, "AUTO_5.2BPW") < estimate_file_size(a, "AUTO_6BPW")
        assert abs(estimate_file_size(a, "AUTO_5.7BPW") - q5) < 0.05 * q5  # Q5_K_M is about 5.7 bpw


def test_one_measurement_serves_several_budgets():
    from qwen3_quant.formats.gguf.autotype import Sensitivity, choose

    sizes = {n: {"Q2_K": 10, "Q4_K": 20, "Q8_0": 40} for n in ("blk.0.a", "blk.0.b")}
    errors = {
        "blk.0.a": {"Q2_K": 100.0, "Q4_K": 10.0, "Q8_0": 1.0},
        "blk.0.b": {"Q2_K": 5.0, "Q4_K": 2.0, "Q8_0": 0.0},
    }
    fixed = {"token_embd.weight": ("Q4_K", 30), "output_norm.weight": ("F32", 4)}
    sens = Sensitivity(total_numel=200, sizes=sizes, errors=errors, fixed=fixed, description="toy")
    small, big = choose(sens, "Q3_K_M", 34 + 30), choose(sens, 5.0, 34 + 80)
    with pytest.raises(UsageError, match="below the smallest mix"):
        choose(sens, 1.0, 34 + 19)
    assert small.chosen == {"blk.0.a": "Q4_K", "blk.0.b": "Q2_K"} and small.data_bytes == 64
    assert big.chosen == {"blk.0.a": "Q8_0", "blk.0.b": "Q8_0"} and big.ftype == "Q8_0"
    assert (
        small.tensor_types["token_embd.weight"] == "Q4_K" and "output_norm.weight" not in small.tensor_types
    )
    assert small.ftype == "Q4_K_M" and small.recipe()["auto_budget_bytes"] == 64


def test_auto_type_gives_the_fixed_tensors_that_types_own_and_bpw_gives_q4_k_m_s():
    from qwen3_quant.formats.gguf.autotype import Sensitivity, choose, named_budget

    sizes = {n: {"Q2_K": 10, "Q4_K": 20, "Q8_0": 40} for n in ("blk.0.a", "blk.0.b")}
    errors = {
        "blk.0.a": {"Q2_K": 100.0, "Q4_K": 10.0, "Q8_0": 1.0},
        "blk.0.b": {"Q2_K": 5.0, "Q4_K": 2.0, "Q8_0": 0.0},
    }
    # the measurement's fixed tensors are Q4_K_M's: embedding Q4_K (30 bytes), head Q6_K (40)
    q4_fixed = {
        "token_embd.weight": ("Q4_K", 30),
        "output.weight": ("Q6_K", 40),
        "output_norm.weight": ("F32", 4),
    }
    sens = Sensitivity(total_numel=400, sizes=sizes, errors=errors, fixed=q4_fixed, description="toy")
    # Q3_K_M's own file: embedding Q3_K (22 bytes), head Q6_K, block tensors at Q3_K (15 each)
    q3_file = {
        "token_embd.weight": ("Q3_K", 22),
        "output.weight": ("Q6_K", 40),
        "output_norm.weight": ("F32", 4),
        "blk.0.a": ("Q3_K", 15),
        "blk.0.b": ("Q3_K", 15),
    }
    budget, fixed = named_budget(q3_file, errors)
    assert budget == 96 and fixed == {
        n: q3_file[n] for n in ("token_embd.weight", "output.weight", "output_norm.weight")
    }
    plan = choose(sens, "Q3_K_M", budget, fixed)
    # the block tensors share Q3_K_M's own 30 bytes: with the embedding at Q4_K they would have 22
    assert plan.chosen == {"blk.0.a": "Q4_K", "blk.0.b": "Q2_K"} and plan.data_bytes <= budget
    assert plan.tensor_types == {"token_embd.weight": "Q3_K", "output.weight": "Q6_K", **plan.chosen}
    assert plan.recipe()["auto_fixed_types_from"] == "Q3_K_M"
    assert choose(sens, "Q3_K_M", budget).chosen == {
        "blk.0.a": "Q2_K",
        "blk.0.b": "Q2_K",
    }  # Q4_K_M's: less left
    # auto:<bits>bpw: the fixed tensors take Q4_K_M's types, whatever the budget
    for bpw in (2.6, 6.0):
        low = choose(sens, bpw, int(bpw * 400 / 8))
        assert low.tensor_types["token_embd.weight"] == "Q4_K" and low.tensor_types["output.weight"] == "Q6_K"
        assert low.recipe()["auto_fixed_types_from"] == "Q4_K_M"
    with pytest.raises(UsageError, match="Q3_K_M's types"):
        choose(sens, "Q3_K_M", 85, fixed)


def test_a_kept_measurement_is_reused_only_for_the_same_inputs():
    import json

    from qwen3_quant.formats.gguf.autotype import Sensitivity

    sens = Sensitivity(
        total_numel=10,
        sizes={"blk.0.a": {"Q2_K": 3, "Q8_0": 9}},
        errors={"blk.0.a": {"Q2_K": 2.5, "Q8_0": 0.125}},
        fixed={"token_embd.weight": ("Q4_K", 7)},
        description="toy",
    )
    key = {"source.fingerprint": "abc", "calibration.sha256": "def"}
    kept = json.loads(json.dumps(sens.to_json(key)))  # as written to and read from .work
    assert Sensitivity.from_json(kept, key) == sens
    assert Sensitivity.from_json(kept, {**key, "calibration.sha256": "other"}) is None
    assert Sensitivity.from_json({**kept, "candidates": ["Q4_K"]}, key) is None
