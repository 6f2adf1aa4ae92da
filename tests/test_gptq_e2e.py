"""End to end: quantise tiny and micro Qwen3 / Qwen3-MoE models with GPTQ and AWQ, reload every
artifact in the serving runtime (transformers + GPTQModel CPU kernels) and score it.

Each run is kept small (8 calibration samples of 64 tokens on the tiny models). Tiny models have
random weights: their top-1 agreement is noise, so that one gate is off for them; the trained
micro models must pass the default gates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from qwen3_quant.artifact import load_manifest, verify_files
from qwen3_quant.calib import load_mix
from qwen3_quant.checkpoint import inspect_checkpoint
from qwen3_quant.errors import ArtifactExistsError, UsageError
from qwen3_quant.eval.evaluate import EvalOptions
from qwen3_quant.formats import get_format
from qwen3_quant.formats.gptqmodel.export import read_tensor_table
from qwen3_quant.formats.gptqmodel.moe import StarvedExpertsError
from qwen3_quant.quantize import quantize
from qwen3_quant.sources import resolve_model

pytestmark = pytest.mark.slow

TINY_EVAL = EvalOptions(max_tokens=384, ctx=128, prompt_tokens=32, decode_tokens=4, repeats=1)
MICRO_EVAL = EvalOptions(max_tokens=3072, ctx=512, prompt_tokens=64, decode_tokens=8, repeats=1)
NO_TOP1 = {"min_top1_agreement": None}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private reference cache and a small calibration mix (the default mix's sources)."""
    root = tmp_path_factory.mktemp("gptq")
    text = (ROOT / "calib" / "default.toml").read_text()
    text = text.replace("samples = 128", "samples = 8").replace("seq_len = 512", "seq_len = 64")
    (root / "small.toml").write_text(text.replace('name = "default"', 'name = "default-small"'))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN3_QUANT_CACHE", str(root / "cache"))
        yield root


def run(env, model_dir: Path, fmt: str, *, eval_options=TINY_EVAL, gates=NO_TOP1, **options):
    f = get_format(fmt)
    name = f.artifact_name(model_dir.name, f.parse_options(options))
    options.setdefault("calib", str(env / "small.toml"))
    res = quantize(
        str(model_dir),
        fmt,
        out_dir=env / "out" / name,
        eval_options=eval_options,
        gate_overrides=gates,
        **options,
    )
    return res, load_manifest(res.artifact_dir)


def check_standard_checkpoint(folder: Path, source: Path, method: str, bits: int):
    cfg = json.loads((folder / "config.json").read_text())
    src_cfg = json.loads((source / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == method and qc["bits"] == bits and qc["group_size"] == 128
    if method == "gptq":
        assert qc["checkpoint_format"] == "gptq" and qc["desc_act"] is False and qc["sym"] is True
    else:
        assert qc["version"] == "gemm" and qc["zero_point"] is True
    assert {k: v for k, v in cfg.items() if k not in ("quantization_config", "dtype", "torch_dtype")} == {
        k: v for k, v in src_cfg.items() if k not in ("dtype", "torch_dtype")
    }
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "float16"
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (folder / f).read_bytes() == (source / f).read_bytes(), f
    assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())
    assert not (folder / "quant_log.csv").exists()
    table = read_tensor_table(folder)
    assert {dt for dt, _ in table.values()} <= {"F16", "I32"}
    for name, (dtype, _) in table.items():
        if (
            "norm" in name
            or "embed_tokens" in name
            or name.endswith("mlp.gate.weight")
            or name.startswith("lm_head")
        ):
            assert name.endswith(".weight") and dtype == "F16", name
    assert all(os.stat(p).st_mode & 0o044 for p in folder.iterdir() if p.is_file())
    m = load_manifest(folder)
    assert verify_files(folder, m) == []
    return cfg, table, m


def test_gptq_int4_dense_tied(env, tiny_model):
    src = tiny_model("Qwen3-0.6B")
    res, m = run(env, src, "gptq")
    assert res.artifact_dir.name == "Qwen3-0.6B-L2-GPTQ-Int4" and res.variants == ["W4g128"]
    assert res.passed, res.validations[0].gates
    v = res.validations[0]
    assert v.runtime == "gptqmodel" and v.kld_mean < 0.05 and v.decode_tps > 0
    cfg, table, m = check_standard_checkpoint(res.artifact_dir, src, "gptq", 4)
    assert cfg["tie_word_embeddings"] and "lm_head.weight" not in table
    assert "model.layers.0.self_attn.q_proj.g_idx" in table
    recipe = m["variants"]["W4g128"]["recipe"]
    want = load_mix(env / "small.toml").build(src).summary()
    assert recipe["calibration"] == want  # same mix, same tokens, recorded with count and hash
    assert (recipe["bits"], recipe["group_size"], recipe["sym"], recipe["act_order"]) == (4, 128, True, False)
    assert recipe["moe"] is None and recipe["dtype"] == "float16"
    assert m["variants"]["W4g128"]["libraries"]["gptqmodel"]
    assert m["variants"]["W4g128"]["key"]["settings"]["calibration_sha256"] == want["sha256"]
    assert m["variants"]["W4g128"]["validation"]["passed"] is True
    assert m["source"]["path"] == str(src) and m["format"] == "gptq"
    assert not list(res.artifact_dir.parent.glob(".*.work"))

    # a second run with the same recipe keeps the artifact; another recipe needs --overwrite
    weights = res.artifact_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    f = get_format("gptq")
    info = inspect_checkpoint(src)
    source = resolve_model(str(src))
    cfg4 = f.parse_options({"calib": str(env / "small.toml")})
    assert f.quantize(source, info, cfg4, res.artifact_dir) == ["W4g128"]
    assert weights.stat().st_mtime_ns == before
    with pytest.raises(ArtifactExistsError, match="does not hold W4g128 of this recipe"):
        f.quantize(
            source, info, f.parse_options({"calib": str(env / "small.toml"), "sym": False}), res.artifact_dir
        )


def test_awq_int4_moe_rtn_for_starved_experts(env, tiny_model):
    src = tiny_model("Qwen3-30B-A3B")
    res, m = run(env, src, "awq", starved_threshold="60")
    assert res.artifact_dir.name == "Qwen3-30B-A3B-L2-AWQ"
    assert res.passed, res.validations[0].gates
    cfg, table, m = check_standard_checkpoint(res.artifact_dir, src, "awq", 4)
    assert cfg["quantization_config"]["modules_to_not_convert"] == [
        "model.layers.0.mlp.gate",
        "model.layers.1.mlp.gate",
    ]
    moe = m["variants"]["W4g128"]["recipe"]["moe"]
    details = m["variants"]["W4g128"]["details"]
    # AWQ folded scales into the norm before the routers: the routers were rescaled to match
    assert details["export"]["routers_rescaled_layers"] and details["export"]["router_max_rel_error"] < 1e-3
    r = details["routing"]
    assert moe["policy"] == "rtn" and moe["threshold"] == "60" and moe["threshold_tokens"] == 60
    assert r["min"] <= r["median"] <= r["max"] and r["tokens_per_layer"] == 8 * 64
    assert moe["routed_tokens_per_expert"] == {"min": r["min"], "median": r["median"], "max": r["max"]}
    assert r["starved"] and all(s["tokens"] < 60 for s in r["starved"])
    assert moe["experts_below_threshold"] == len(r["starved"]) == len(moe["starved_experts"])
    assert sum(r["counts"]["0"]) == 8 * 64 * r["top_k"]
    rtn = details["rtn_fallback_modules"]
    assert rtn and all(".mlp.experts." in n for n in rtn) and moe["rtn_experts"] > 0
    # GPTQModel decides on the tokens it routes through already-quantised layers; the experts it
    # fell back for overlap the ones the unquantised model starved
    fell_back = {(int(n.split(".")[2]), int(n.split(".")[5])) for n in rtn}
    assert fell_back & {(s["layer"], s["expert"]) for s in r["starved"]}


@pytest.fixture(scope="module")
def moe_gptq8(env, tiny_model):
    return run(env, tiny_model("Qwen3-30B-A3B"), "gptq", bits=8, starved_experts="calibrate-all")


def test_gptq_int8_moe_calibrate_all(moe_gptq8, tiny_model):
    res, m = moe_gptq8
    assert res.artifact_dir.name == "Qwen3-30B-A3B-L2-GPTQ-Int8"
    assert res.passed, res.validations[0].gates
    check_standard_checkpoint(res.artifact_dir, tiny_model("Qwen3-30B-A3B"), "gptq", 8)
    moe = m["variants"]["W8g128"]["recipe"]["moe"]
    details = m["variants"]["W8g128"]["details"]
    assert (
        moe["policy"] == "calibrate-all" and moe["rtn_experts"] == 0 and details["rtn_fallback_modules"] == []
    )
    seen = details["tokens_seen_by_quantizer"]
    assert seen and set(seen.values()) == {8 * 64}  # every expert saw every calibration token
    assert details["export"]["routers_rescaled_layers"] == []  # GPTQ leaves norms and routers alone


def test_validation_catches_random_experts_without_the_defuser_fix(moe_gptq8, env):
    """Plain transformers 5 loads a per-expert MoE checkpoint with random experts; the check fails it."""
    res, _ = moe_gptq8
    script = textwrap.dedent(
        f"""
        import json
        from qwen3_quant.errors import RuntimeLoadError
        from qwen3_quant.eval.evaluate import EvalOptions
        from qwen3_quant.formats.gptqmodel.runner import GPTQModelRunner
        from qwen3_quant.validate import validate_artifact

        GPTQModelRunner.defuse_moe = False
        try:
            GPTQModelRunner({str(res.artifact_dir)!r}, ctx=64)
            load = "loaded"
        except RuntimeLoadError as exc:
            load = exc.one_line()
        r = validate_artifact({str(res.artifact_dir)!r}, options=EvalOptions(max_tokens=128, ctx=64, speed=False))[0]
        print(json.dumps({{"load": load, "passed": r.passed}}))
        """
    )
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT), "QWEN3_QUANT_CACHE": str(env / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env_vars, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "weights did not load cleanly" in got["load"] and "missing" in got["load"]
    assert "mlp.experts" in got["load"]
    assert got["passed"] is False
    v = load_manifest(res.artifact_dir)["variants"]["W8g128"]["validation"]
    assert v["passed"] is False and "did not load cleanly" in v["error"]


def test_fail_policy_stops_before_quantising(env, tiny_model):
    src = tiny_model("Qwen3-30B-A3B")
    with pytest.raises(StarvedExpertsError) as err:
        run(env, src, "gptq", starved_experts="fail", starved_threshold="60")
    msg = err.value.one_line()
    assert (
        "fewer than 60 calibration tokens" in msg
        and "layer " in msg
        and " expert " in msg
        and "median" in msg
    )
    assert not (env / "out" / "Qwen3-30B-A3B-L2-GPTQ-Int4").exists()
    assert not list((env / "out").glob(".*.work")) and not list((env / "out").glob("*.partial"))


def test_starved_options_are_for_moe_models_only(env, tiny_model):
    with pytest.raises(UsageError, match="apply to Qwen3-MoE models"):
        run(env, tiny_model("Qwen3-0.6B"), "awq", starved_experts="rtn")


@pytest.mark.parametrize(
    "model, fmt, bits",
    [("Qwen3-Micro", "awq", 4), ("Qwen3-Micro-MoE", "gptq", 8)],
    ids=["dense-awq4", "moe-gptq8"],
)
def test_micro_models_pass_the_default_gates(env, micro_dense, micro_moe, model, fmt, bits):
    src = micro_dense if model == "Qwen3-Micro" else micro_moe
    res, m = run(
        env, src, fmt, bits=bits, calib="default", calib_samples=16, eval_options=MICRO_EVAL, gates={}
    )
    v = res.validations[0]
    assert res.passed, (v.ppl_increase_pct, v.kld_mean, v.top1_agreement)
    assert m["variants"][f"W{bits}g128"]["recipe"]["calibration"]["samples"] == 16
    check_standard_checkpoint(res.artifact_dir, src, fmt, bits)


def test_the_expert_fix_does_not_leak_into_later_loads(moe_gptq8, tiny_model):
    """After a GPTQ MoE reload, the same process still loads unquantised Qwen3-MoE with fused experts
    (the ONNX builder and the GGUF importance matrix read them)."""
    from transformers import AutoModelForCausalLM

    from qwen3_quant.formats.gptqmodel.runner import GPTQModelRunner

    res, _ = moe_gptq8
    with GPTQModelRunner(str(res.artifact_dir), ctx=64) as r:
        assert np.isfinite(r.logits([1, 2, 3, 4])).all()  # loaded and runs
    model = AutoModelForCausalLM.from_pretrained(tiny_model("Qwen3-30B-A3B"))
    experts = model.model.layers[0].mlp.experts
    assert getattr(experts, "gate_up_proj", None) is not None and experts.gate_up_proj.dim() == 3
