"""The orchestration around GPTQModel without running it: policies, GPTQModel's configs, its log
(keeping or refusing an existing artifact is the shared rule of tests/test_artifact.py)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_quant.formats.gptqmodel.config import parse_options
from qwen3_quant.formats.gptqmodel.moe import RoutingStats, StarvedExpertsError
from qwen3_quant.formats.gptqmodel.quantizer import _apply_policy
from qwen3_quant.formats.gptqmodel.worker import read_quant_log

ROUTING = RoutingStats(
    [0, 1], np.array([[40, 3, 25, 12], [0, 30, 30, 20]]), np.zeros((2, 4)), 40, 2, 10.0, "10"
).summary()


def test_fail_policy_names_layers_experts_and_counts():
    cfg = parse_options("gptq", {"starved_experts": "fail", "starved_threshold": "10"})
    with pytest.raises(StarvedExpertsError) as err:
        _apply_policy(cfg, {"status": "starved", "routing": ROUTING})
    msg = err.value.one_line()
    assert "2 expert(s) got fewer than 10 calibration tokens" in msg
    assert "layer 0 expert 1 (3 tokens), layer 1 expert 0 (0 tokens)" in msg
    assert "min 0, median 22.5, max 40" in msg and "--calib-samples" in msg
    with pytest.raises(StarvedExpertsError, match="fell back to round-to-nearest for 1 module"):
        _apply_policy(cfg, {"status": "fallback", "routing": ROUTING, "quant_log": {"fallback": ["m.x"]}})


def test_rtn_policy_summary_and_details():
    cfg = parse_options("awq", {"starved_threshold": "10"})
    fell = ["model.layers.0.mlp.experts.1.down_proj", "model.layers.1.mlp.experts.0.down_proj"]
    summary, details = _apply_policy(
        cfg, {"status": "ok", "routing": ROUTING, "quant_log": {"fallback": fell}}
    )
    assert summary["policy"] == "rtn" and summary["rtn_experts"] == 2
    assert summary["routed_tokens_per_expert"] == {"min": 0, "median": 22.5, "max": 40}
    assert summary["starved_experts"] == ["layer 0 expert 1: 3", "layer 1 expert 0: 0"]
    assert "2 projection(s) of 2 expert(s)" in summary["what_happened"]
    assert details is ROUTING
    assert _apply_policy(cfg, {"status": "ok"}) == (None, None)  # a dense model


def test_quant_log_marks_fallback_modules(tmp_path):
    f = tmp_path / "quant_log.csv"
    f.write_text(
        "layer,module,loss,samples,damp,time\n"
        "0,self_attn.q_proj,0.0013,512,0.05,0.1\n"
        "1,mlp.experts.3.up_proj,fallback(rtn): 0.0021,7,0.05,0.1\n"
        "1,mlp.experts.3.down_proj,rtn fallback,7,,0.1\n"
    )
    q = read_quant_log(f)
    assert q["modules"] == 3
    assert q["fallback"] == ["model.layers.1.mlp.experts.3.down_proj", "model.layers.1.mlp.experts.3.up_proj"]
    assert q["samples"]["model.layers.0.self_attn.q_proj"] == 512
    assert read_quant_log(tmp_path / "none.csv") == {"modules": 0, "fallback": [], "samples": {}}


def test_gptqmodel_configs_for_each_policy():
    from qwen3_quant.formats.gptqmodel.libenv import import_gptqmodel
    from qwen3_quant.formats.gptqmodel.worker import quantize_config

    import_gptqmodel()
    from gptqmodel.quantization.config import ExpertsRoutingBypass

    base = {
        "bits": 4,
        "group_size": 64,
        "sym": True,
        "act_order": True,
        "damp_percent": 0.05,
        "method": "gptq",
    }
    qc = quantize_config({**base, "moe": {"policy": "rtn", "threshold": "32"}})
    assert (qc.bits, qc.group_size, qc.sym, qc.desc_act, qc.offload_to_disk) == (4, 64, True, True, False)
    assert qc.fallback.strategy.value == "rtn" and qc.fallback.threshold == 32.0 and qc.moe is None
    qc = quantize_config({**base, "moe": {"policy": "calibrate-all", "threshold": "0.5%"}})
    assert isinstance(qc.moe.routing, ExpertsRoutingBypass) and qc.fallback.threshold == "0.5%"
    awq = quantize_config({**base, "method": "awq", "sym": False, "moe": None})
    assert type(awq).__name__ == "AWQConfig" and awq.sym is False and awq.bits == 4
    rtn = quantize_config({**base, "method": "rtn", "moe": None})
    assert type(rtn).__name__ == "RTNConfig" and rtn.group_size == 64
