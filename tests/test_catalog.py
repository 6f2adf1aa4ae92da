import json

import pytest
from click.testing import CliRunner

from qwen3_quant.catalog import catalog, get, lookup
from qwen3_quant.catalog.architecture import ArchShape, expected_tensors, param_counts
from qwen3_quant.errors import UnknownModelError

NAMES = [
    "Qwen3-0.6B",
    "Qwen3-1.7B",
    "Qwen3-4B",
    "Qwen3-8B",
    "Qwen3-14B",
    "Qwen3-32B",
    "Qwen3-30B-A3B",
    "Qwen3-235B-A22B",
]


def test_eight_models():
    assert list(catalog()) == NAMES
    moe = [n for n, e in catalog().items() if e.arch.is_moe]
    assert moe == ["Qwen3-30B-A3B", "Qwen3-235B-A22B"]
    assert [n for n, e in catalog().items() if e.arch.tie_word_embeddings] == NAMES[:3]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_model_cards(name):
    """Counts computed from the shapes agree with the model cards' rounded figures."""
    e = catalog()[name]
    pc = e.params
    pub = e.published
    # the cards round to 2-3 significant digits (0.6B, 8.2B, 14.8B, 235B)
    assert abs(pc.total - pub["total"]) / pub["total"] < 0.025
    assert abs(pc.non_embedding - pub["non_embedding"]) / pub["non_embedding"] < 0.02
    if "active" in pub:
        assert abs(pc.active - pub["active"]) / pub["active"] < 0.03
    else:
        assert pc.active == pc.total


def test_exact_counts_of_two_models():
    # Qwen3-8B: 36 x (attention 41.9M + MLP 151M + norms) + 2 x 151936 x 4096
    assert param_counts(catalog()["Qwen3-8B"].arch).total == 8_190_735_360
    moe = param_counts(catalog()["Qwen3-30B-A3B"].arch)
    assert (moe.total, moe.active) == (30_532_122_624, 3_353_032_704)


def test_lookup_names():
    assert lookup("qwen3-8b")[0].name == "Qwen3-8B"
    entry, is_base = lookup("Qwen3-8B-Base")
    assert entry.hub_id == "Qwen/Qwen3-8B" and is_base and entry.base_hub_id == "Qwen/Qwen3-8B-Base"
    assert lookup("Qwen/Qwen3-30B-A3B")[0].name == "Qwen3-30B-A3B"
    assert lookup("Qwen3-9B") is None
    with pytest.raises(UnknownModelError, match="Qwen3-9B"):
        get("Qwen3-9B")


def test_from_config_reads_both_spellings():
    v5 = {
        "model_type": "qwen3_moe",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 128,
        "vocab_size": 100,
        "moe_intermediate_size": 32,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"},
    }
    v4 = dict(v5, num_experts=4, rope_theta=1e6)
    del v4["num_local_experts"], v4["rope_parameters"]
    assert ArchShape.from_config(v5) == ArchShape.from_config(v4)
    assert ArchShape.from_config(v5).rope_theta == 1e6 and ArchShape.from_config(v5).num_experts == 4


def test_expected_tensor_count():
    a = catalog()["Qwen3-30B-A3B"].arch
    t = expected_tensors(a)
    # per layer: 2 norms + 4 attention + 2 qk norms + router + 128 x 3 experts; embed, norm, lm_head
    assert len(t) == 48 * (2 + 4 + 2 + 1 + 384) + 3
    assert t["model.layers.0.mlp.experts.127.down_proj.weight"] == (2048, 768)


# File sizes of Qwen's own GGUF releases (Hub file listings, bytes rounded to 3 digits as shown there).
QWEN_GGUF_SIZES = {
    ("Qwen3-0.6B", "Q8_0"): 639e6,
    ("Qwen3-8B", "Q4_K_M"): 5.03e9,
    ("Qwen3-8B", "Q5_K_M"): 5.85e9,
    ("Qwen3-8B", "Q6_K"): 6.73e9,
    ("Qwen3-8B", "Q8_0"): 8.71e9,
    ("Qwen3-14B", "Q4_K_M"): 9.00e9,
    ("Qwen3-32B", "Q4_K_M"): 19.8e9,
    ("Qwen3-30B-A3B", "Q4_K_M"): 18.6e9,
    ("Qwen3-235B-A22B", "Q4_K_M"): 142e9,
}


@pytest.mark.parametrize(("name", "ftype"), list(QWEN_GGUF_SIZES))
def test_gguf_estimates_match_published_files(name, ftype):
    from qwen3_quant.formats.gguf.types import estimate_file_size

    est = estimate_file_size(catalog()[name].arch, ftype)
    assert abs(est - QWEN_GGUF_SIZES[(name, ftype)]) / QWEN_GGUF_SIZES[(name, ftype)] < 0.02


def test_estimates_shrink_with_bits():
    from qwen3_quant.models_table import estimate_rows

    rows = [r for r in estimate_rows(["gguf"]) if r["model"] == "Qwen3-8B"]
    sizes = [r["artifact_bytes"] for r in rows]
    assert [r["type"] for r in rows][0] == "BF16" and sizes == sorted(sizes, reverse=True)


def test_models_json():
    from qwen3_quant.cli import main

    r = CliRunner().invoke(main, ["models", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert [m["name"] for m in data["models"]] == NAMES
    assert {(e["format"], e["type"]) for e in data["estimates"]} >= {
        ("gguf", "Q4_K_M"),
        ("gptq", "W4g128"),
        ("awq", "W4g128"),
        ("onnx", "int4"),
    }
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0 and "Qwen3-235B-A22B" in r.output and "22.2B" in r.output
