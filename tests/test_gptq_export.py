"""The standard-checkpoint step: config, float16 tensors, and the layout check that proves norms,
routers, embeddings and lm_head stay unquantised."""

from __future__ import annotations

import dataclasses
import json

import pytest

from qwen3_quant.catalog import catalog
from qwen3_quant.formats.gptqmodel.export import (
    build_config,
    expected_quantized,
    layout_problems,
    read_tensor_table,
    router_modules,
    to_float16,
)
from qwen3_quant.testing.tiny import tiny_arch

DENSE = tiny_arch(catalog()["Qwen3-0.6B"].arch)  # tied embeddings
MOE = tiny_arch(catalog()["Qwen3-30B-A3B"].arch)


def test_expected_layout_gptq_and_awq():
    g = expected_quantized(MOE, "gptq", 4, 128)
    h, m = MOE.hidden_size, MOE.moe_intermediate_size
    assert g["model.layers.0.mlp.experts.3.down_proj.qweight"] == ("I32", (m // 8, h))
    assert g["model.layers.0.mlp.experts.3.down_proj.scales"] == ("F16", (m // 128, h))
    assert g["model.layers.0.mlp.experts.3.down_proj.g_idx"] == ("I32", (m,))
    assert g["model.layers.0.mlp.gate.weight"] == ("F16", (MOE.num_experts, h))
    assert g["model.layers.1.self_attn.q_norm.weight"] == ("F16", (128,))
    a = expected_quantized(MOE, "awq", 8, 64)
    assert a["model.layers.0.self_attn.q_proj.qweight"] == ("I32", (h, MOE.num_attention_heads * 128 // 4))
    assert a["model.layers.0.self_attn.q_proj.qzeros"] == (
        "I32",
        (h // 64, MOE.num_attention_heads * 128 // 4),
    )
    assert not any(k.endswith("g_idx") for k in a)
    assert "lm_head.weight" in g and "lm_head.weight" not in expected_quantized(DENSE, "gptq", 4, 128)


def test_layout_problems_catch_quantised_norms_routers_and_heads():
    want = expected_quantized(MOE, "gptq", 4, 128)
    assert layout_problems(dict(want), MOE, "gptq", 4, 128) == []
    bad = dict(want)
    del bad["model.layers.0.self_attn.k_norm.weight"]
    bad["model.layers.0.self_attn.k_norm.qweight"] = ("I32", (16, 128))
    del bad["model.layers.1.mlp.gate.weight"]
    bad["model.layers.1.mlp.gate.qweight"] = ("I32", (32, MOE.num_experts))
    bad["lm_head.scales"] = ("F16", (2, 8192))
    bad["model.norm.weight"] = ("BF16", (MOE.hidden_size,))
    del bad["model.layers.0.mlp.experts.0.up_proj.qzeros"]
    problems = "\n".join(layout_problems(bad, MOE, "gptq", 4, 128))
    for words in (
        "k_norm.weight is missing",
        "k_norm.qweight is quantised",
        "mlp.gate.weight is missing",
        "mlp.gate.qweight is quantised",
        "lm_head.scales is quantised",
        "model.norm.weight is BF16",
        "experts.0.up_proj.qzeros is missing",
    ):
        assert words in problems
    # a tied model has no lm_head; a dense one no router
    assert layout_problems(expected_quantized(DENSE, "awq", 4, 32), DENSE, "awq", 4, 32) == []
    wrong_bits = layout_problems(expected_quantized(DENSE, "gptq", 8, 128), DENSE, "gptq", 4, 128)
    assert wrong_bits and all("expected" in p for p in wrong_bits)


def test_config_is_the_sources_plus_quantization_config():
    src = {"model_type": "qwen3_moe", "rope_theta": 1e6, "torch_dtype": "bfloat16", "num_experts": 16}
    qc = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
    cfg = build_config(src, qc, method="awq", arch=MOE)
    assert cfg["rope_theta"] == 1e6 and cfg["torch_dtype"] == "float16" and "dtype" not in cfg
    assert cfg["quantization_config"]["modules_to_not_convert"] == router_modules(MOE)
    assert router_modules(MOE) == [f"model.layers.{i}.mlp.gate" for i in range(MOE.num_hidden_layers)]
    assert "modules_to_not_convert" not in qc  # the input is not modified
    dense = build_config({"dtype": "bfloat16"}, {"quant_method": "gptq"}, method="gptq", arch=DENSE)
    assert dense["dtype"] == "float16" and "modules_to_not_convert" not in dense["quantization_config"]
    no_router_arch = dataclasses.replace(MOE, mlp_only_layers=(0,))
    assert router_modules(no_router_arch)[0] == "model.layers.1.mlp.gate"


def test_to_float16_converts_floats_only(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    f = tmp_path / "model.safetensors"
    save_file(
        {
            "a": torch.tensor([1.5, -2.25, 1e5], dtype=torch.bfloat16),
            "q": torch.arange(6, dtype=torch.int32).reshape(2, 3),
            "s": torch.tensor([0.125], dtype=torch.float32),
        },
        str(f),
        metadata={"format": "pt", "note": "kept"},
    )
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    info = to_float16(tmp_path)
    assert info == {"converted_tensors": 2, "clamped_values": 1}
    table = read_tensor_table(tmp_path)
    assert table == {"a": ("F16", (3,)), "q": ("I32", (2, 3)), "s": ("F16", (1,))}
    with safe_open(str(f), "pt") as fh:
        assert fh.metadata()["note"] == "kept"
        assert fh.get_tensor("a").tolist() == [1.5, -2.25, 65504.0]
        assert fh.get_tensor("q").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert (
        json.loads((tmp_path / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
        == 6 + 24 + 2
    )
    assert to_float16(tmp_path) == {"converted_tensors": 0, "clamped_values": 0}


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_expected_layout_covers_every_linear_once(method):
    from qwen3_quant.catalog.architecture import LINEAR_ROLES, iter_tensors

    want = expected_quantized(MOE, method, 4, 128)
    linears = [t for t in iter_tensors(MOE) if t.role in LINEAR_ROLES]
    assert sum(k.endswith(".qweight") for k in want) == len(linears)
    assert not any(k.endswith(".weight") and k.removesuffix(".weight") + ".qweight" in want for k in want)


def test_router_rescaled_to_see_the_source_input():
    import torch

    from qwen3_quant.formats.gptqmodel.routers import RouterRepairError, rescaled_router, router_error

    torch.manual_seed(0)
    gate, norm = torch.randn(8, 16), torch.rand(16) + 0.5
    s = torch.rand(16) + 0.5  # AWQ folds 1/s into the norm and s into the experts
    awq_norm = norm / s
    assert router_error(gate, awq_norm, gate, norm) > 0.1  # the router now sees another input
    fixed = rescaled_router(gate, norm, awq_norm)
    assert router_error(fixed, awq_norm, gate, norm) < 1e-6
    torch.testing.assert_close(fixed, gate * s[None, :])
    with pytest.raises(RouterRepairError, match="scaled to zero"):
        rescaled_router(gate, norm, torch.where(torch.arange(16) == 3, 0.0, awq_norm))


def test_restore_router_inputs_rewrites_only_changed_layers(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from qwen3_quant.formats.gptqmodel.routers import restore_router_inputs, router_error

    arch = dataclasses.replace(MOE, num_hidden_layers=2)
    h, e = arch.hidden_size, arch.num_experts
    torch.manual_seed(1)
    src, art = tmp_path / "src", tmp_path / "art"
    src.mkdir(), art.mkdir()
    tensors = {}
    for i in range(2):
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.rand(h) + 0.5
        tensors[f"model.layers.{i}.mlp.gate.weight"] = torch.randn(e, h) * 0.05
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(src / "model.safetensors"))
    src_t = load_file(str(src / "model.safetensors"))
    out = {k: v.half() for k, v in src_t.items()}
    s = torch.rand(h) + 0.5
    out["model.layers.1.post_attention_layernorm.weight"] = (
        src_t["model.layers.1.post_attention_layernorm.weight"].float() / s
    ).half()
    out["other.qweight"] = torch.arange(4, dtype=torch.int32)
    save_file(out, str(art / "model.safetensors"), metadata={"format": "pt"})
    info = restore_router_inputs(art, src, arch)
    assert info["routers_rescaled_layers"] == [1] and info["router_max_rel_error"] < 1e-3
    got = load_file(str(art / "model.safetensors"))
    assert torch.equal(got["model.layers.0.mlp.gate.weight"], out["model.layers.0.mlp.gate.weight"])
    assert torch.equal(got["other.qweight"], out["other.qweight"])
    p = "model.layers.1."
    err = router_error(
        got[p + "mlp.gate.weight"],
        got[p + "post_attention_layernorm.weight"],
        src_t[p + "mlp.gate.weight"],
        src_t[p + "post_attention_layernorm.weight"],
    )
    assert err < 1e-3


def test_to_float16_streams_row_slices(tmp_path, monkeypatch):
    """A tensor larger than one slice is converted slice by slice into the same bytes."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from qwen3_quant.formats.gptqmodel import export

    monkeypatch.setattr(export, "_ROWS_BYTES", 3 * 4 * 5)  # three rows of five float32 a slice
    w = torch.randn(7, 5, dtype=torch.bfloat16) * 1e5
    g = torch.arange(4, dtype=torch.int32)
    save_file({"w": w, "g": g, "z": torch.zeros(0, 5)}, str(tmp_path / "model.safetensors"))
    info = to_float16(tmp_path)
    want = w.float().clamp(-65504.0, 65504.0).half()
    assert info == {"converted_tensors": 2, "clamped_values": int((w.float().abs() > 65504.0).sum())}
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as fh:
        assert torch.equal(fh.get_tensor("w"), want) and torch.equal(fh.get_tensor("g"), g)
        assert fh.get_tensor("z").shape == (0, 5) and fh.metadata() == {"format": "pt"}


def test_expected_layout_three_bits_is_a_bit_stream():
    """GPTQModel packs 3-bit codes as a bit stream: 32 inputs take 3 int32 rows (not 32 // 3 = 10 a row)."""
    g = expected_quantized(DENSE, "gptq", 3, 128)
    h, m = DENSE.hidden_size, DENSE.intermediate_size
    assert g["model.layers.0.mlp.down_proj.qweight"] == ("I32", (m * 3 // 32, h))
    assert g["model.layers.0.mlp.down_proj.qzeros"] == ("I32", (m // 128, h * 3 // 32))
    assert g["model.layers.0.mlp.up_proj.qweight"] == ("I32", (h * 3 // 32, m))
    # 2, 4 and 8 bits are unchanged: 32 // bits codes per word
    assert expected_quantized(DENSE, "gptq", 4, 128)["model.layers.0.mlp.down_proj.qweight"] == (
        "I32",
        (m // 8, h),
    )
