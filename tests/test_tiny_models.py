"""The tiny fixtures are shape-faithful to the catalog models they stand for."""

import json

import pytest

from qwen3_quant.catalog import catalog
from qwen3_quant.checkpoint import inspect_checkpoint


@pytest.mark.parametrize("name", list(catalog()))
def test_tiny_variant_is_faithful(tiny_model, name):
    real = catalog()[name].arch
    d = tiny_model(name)
    cfg = json.loads((d / "config.json").read_text())
    info = inspect_checkpoint(d)
    tiny = info.arch
    assert cfg["architectures"] == (["Qwen3MoeForCausalLM"] if real.is_moe else ["Qwen3ForCausalLM"])
    assert tiny.model_type == real.model_type and tiny.head_dim == real.head_dim == 128
    assert tiny.gqa_ratio == real.gqa_ratio and tiny.tie_word_embeddings == real.tie_word_embeddings
    assert tiny.rope_theta == real.rope_theta and tiny.norm_topk_prob == real.norm_topk_prob
    assert tiny.hidden_size % 256 == 0 and tiny.intermediate_size % 256 == 0
    if real.is_moe:
        assert tiny.num_experts > tiny.num_experts_per_tok > 1 and tiny.moe_intermediate_size % 256 == 0
        assert info.expert_layout == "per-expert"
    assert ("lm_head.weight" in info.tensors) == (not real.tie_word_embeddings)
