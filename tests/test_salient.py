"""Salient channels: exact rescaling pairs on toy tensors, and the committed micro models carry them."""

from __future__ import annotations

import json

import pytest
import torch

from qwen3_quant.testing.salient import (
    SalientPlan,
    apply_salient_plan,
    o_proj_columns_for_v_rows,
    scale_norm_channels,
    scale_rows_into_columns,
    seeded_plan,
)


def _rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def test_norm_channel_scaling_keeps_the_projection_output_exactly():
    g = torch.Generator().manual_seed(0)
    x, norm = torch.randn(5, 16, generator=g), torch.rand(16, generator=g) + 0.5
    w1, w2 = torch.randn(8, 16, generator=g), torch.randn(4, 16, generator=g)
    new_norm, (n1, n2) = scale_norm_channels(norm, [w1, w2], [3, 11], 32.0)
    h, h2 = _rms(x, norm), _rms(x, new_norm)
    assert h2[:, 3].abs().mean() > 16 * h[:, 3].abs().mean()  # the channel really is salient now
    torch.testing.assert_close(h2 @ n1.T, h @ w1.T, rtol=0, atol=1e-6)
    torch.testing.assert_close(h2 @ n2.T, h @ w2.T, rtol=0, atol=1e-6)
    assert torch.equal(n1[:, 3] * 32, w1[:, 3]) and torch.equal(n1[:, 0], w1[:, 0])


def test_row_into_column_scaling_keeps_a_two_layer_product():
    g = torch.Generator().manual_seed(1)
    x, up, down = (
        torch.randn(3, 8, generator=g),
        torch.randn(12, 8, generator=g),
        torch.randn(8, 12, generator=g),
    )
    up2, down2 = scale_rows_into_columns(up, down, [2, 7], [2, 7], 16.0)
    torch.testing.assert_close((x @ up2.T) @ down2.T, (x @ up.T) @ down.T, rtol=0, atol=1e-5)


def test_scales_must_be_powers_of_two():
    with pytest.raises(ValueError, match="power of two"):
        scale_norm_channels(torch.ones(4), [torch.ones(2, 4)], [0], 3.0)


def test_gqa_o_proj_columns_cover_every_query_head_of_the_group():
    # 4 query heads, 2 KV heads of 64: KV head 1 serves query heads 2 and 3
    assert o_proj_columns_for_v_rows([65], 64, 4, 2) == [2 * 64 + 1, 3 * 64 + 1]
    assert o_proj_columns_for_v_rows([5], 64, 4, 2) == [5, 64 + 5]


def test_seeded_plan_is_deterministic_and_in_range():
    cfg = {
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "intermediate_size": 768,
    }
    a = seeded_plan(
        cfg, seed=3, hidden_channels=4, hidden_scale=32, v_rows=4, v_scale=16, ffn_rows=4, ffn_scale=16
    )
    b = seeded_plan(
        cfg, seed=3, hidden_channels=4, hidden_scale=32, v_rows=4, v_scale=16, ffn_rows=4, ffn_scale=16
    )
    assert a == b and len(set(a.hidden_channels)) == 4
    assert max(a.v_rows) < 128 and max(a.ffn_rows) < 768 and max(a.hidden_channels) < 256


def test_plan_leaves_a_tiny_moe_model_computing_the_same_logits(tiny_model):
    import defuser
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    defuser.replace_fused_blocks("qwen3_moe")  # per-expert modules, as the checkpoint stores them
    folder = tiny_model("Qwen3-30B-A3B")
    config = json.loads((folder / "config.json").read_text())
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    plan = SalientPlan(
        hidden_channels=(1, 200),
        hidden_scale=64.0,
        v_rows=(3, 100),
        v_scale=16.0,
        ffn_rows=(0, 9),
        ffn_scale=8.0,
    )
    state = apply_salient_plan(load_file(folder / "model.safetensors"), config, plan)
    moved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    missing, unexpected = moved.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    assert not missing and not unexpected
    ids = torch.randint(0, 8000, (1, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(input_ids=ids).logits, moved(input_ids=ids).logits
    assert float((a - b).abs().max()) <= 1e-5
    n0 = "model.layers.0.post_attention_layernorm.weight"
    assert not torch.equal(moved.state_dict()[n0], ref.state_dict()[n0])


@pytest.mark.parametrize("name", ["Qwen3-Micro", "Qwen3-Micro-MoE"])
def test_committed_micro_models_carry_a_checked_salient_plan(name):
    from safetensors import safe_open

    from qwen3_quant.catalog import bundled_models

    folder = bundled_models()[name]
    rec = json.loads((folder / "training.json").read_text())["salient_channels"]
    assert rec["check"]["max_abs_logit_diff"] <= 1e-5 and rec["check"]["tokens"] >= 512
    c, s = rec["plan"]["hidden_channels"], rec["plan"]["hidden_scale"]
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        norm = fh.get_tensor("model.layers.0.input_layernorm.weight").float().abs()
    others = torch.ones_like(norm, dtype=torch.bool)
    others[c] = False
    # the salient channels' norm weights stand far above the rest, as the plan's scale says
    assert float(norm[c].min()) > s / 8 * float(norm[others].median())
