"""Names users search for, publish targets, and scrubbing secrets out of public text."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen3_quant.errors import UsageError
from qwen3_quant.formats import get_format
from qwen3_quant.formats.gguf.naming import GGUFName, gguf_file_name, gguf_type, parse_gguf_file_name
from qwen3_quant.publish.naming import model_short_name, parse_target, validate_repo_id
from qwen3_quant.publish.scrub import scrub, shorten_home


@pytest.mark.parametrize(
    ("model", "fmt", "options", "expected"),
    [
        ("Qwen3-8B", "gguf", {"types": "Q4_K_M,Q8_0"}, "Qwen3-8B-GGUF"),
        ("Qwen3-8B", "awq", {}, "Qwen3-8B-AWQ"),
        ("Qwen3-8B", "awq", {"bits": 4, "group_size": 128}, "Qwen3-8B-AWQ"),
        ("Qwen3-8B", "gptq", {"bits": 4}, "Qwen3-8B-GPTQ-Int4"),
        ("Qwen3-8B", "gptq", {"bits": 8}, "Qwen3-8B-GPTQ-Int8"),
        ("Qwen3-30B-A3B", "gptq", {"bits": 4, "group_size": 32}, "Qwen3-30B-A3B-GPTQ-Int4-g32"),
        ("Qwen3-8B", "onnx", {"precision": "int4"}, "Qwen3-8B-ONNX-int4"),
        ("Qwen3-8B", "onnx", {"precision": "fp16"}, "Qwen3-8B-ONNX-fp16"),
    ],
)
def test_artifact_names_follow_the_conventions_users_search_for(model, fmt, options, expected):
    """Publishing keeps the artifact's name, so the formats' names are the published names."""
    f = get_format(fmt)
    assert f.artifact_name(model_short_name(model), f.parse_options(options)) == expected


def test_unknown_formats_and_precisions_are_refused():
    with pytest.raises(UsageError, match="unknown format 'exl2'"):
        get_format("exl2")
    with pytest.raises(UsageError, match="int3"):
        get_format("onnx").parse_options({"precision": "int3"})


def test_gguf_file_names_and_llama_cpp_splits_round_trip():
    assert gguf_file_name("Qwen3-8B", "q4_k_m") == "Qwen3-8B-Q4_K_M.gguf"
    assert (
        gguf_file_name("Qwen/Qwen3-235B-A22B", "Q8_0", shard=2, shards=6)
        == "Qwen3-235B-A22B-Q8_0-00002-of-00006.gguf"
    )
    assert parse_gguf_file_name("Qwen3-8B-Q4_K_M.gguf") == GGUFName("Qwen3-8B", "Q4_K_M")
    # the longest matching type wins: Q4_K_M, not Q4_K; model names with dashes and dots survive
    assert parse_gguf_file_name("Qwen3-0.6B-Q4_K_S-00001-of-00002.gguf") == GGUFName(
        "Qwen3-0.6B", "Q4_K_S", 1, 2
    )
    assert parse_gguf_file_name("dir/Qwen3-30B-A3B-BF16.gguf") == GGUFName("Qwen3-30B-A3B", "BF16")
    assert parse_gguf_file_name("model.safetensors") is None
    assert parse_gguf_file_name("Qwen3-8B-weird.gguf") is None
    with pytest.raises(UsageError):
        gguf_file_name("Qwen3-8B", "Q4_K_M", shard=3, shards=2)
    with pytest.raises(UsageError):
        gguf_type("Q4 K M")


def test_targets_and_repo_ids():
    t = parse_target("hf://my-org/Qwen3-8B-GGUF")
    assert t.is_hub and t.repo_id == "my-org/Qwen3-8B-GGUF" and str(t) == "hf://my-org/Qwen3-8B-GGUF"
    local = parse_target("out/Qwen3-8B-GGUF")
    assert not local.is_hub and local.path == Path("out/Qwen3-8B-GGUF")
    assert model_short_name("Qwen/Qwen3-8B") == "Qwen3-8B"
    for bad in (
        "hf://Qwen3-8B",
        "hf://a/b/c",
        "hf://org/na me",
        "hf://org/-x",
        "hf://org/x--y",
        "s3://bucket/x",
    ):
        with pytest.raises(UsageError):
            parse_target(bad)
    assert validate_repo_id(" org/Qwen3-8B.v2 ") == "org/Qwen3-8B.v2"


def test_scrub_masks_tokens_but_keeps_ordinary_options():
    cmd = (
        "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz qwen3-quant quantize Qwen/Qwen3-8B --format gguf "
        "--max-tokens 256 --token hf_ZYXWVUTSRQPONMLKJIHGFEDCBA --api-key=sk-proj-0123456789abcdefghij "
        "--text https://alice:s3cret@example.com/t.txt"
    )
    out = scrub(cmd, secrets=["s3cret"])
    for secret in (
        "hf_abcdefghijklmnopqrstuvwxyz",
        "hf_ZYXWVUTSRQPONMLKJIHGFEDCBA",
        "0123456789abcdefghij",
        "s3cret",
    ):
        assert secret not in out
    assert "--max-tokens 256" in out and "--format gguf" in out and "Qwen/Qwen3-8B" in out
    assert "Authorization: Bearer ***" in scrub("Authorization: Bearer abcdefghijklmnop")
    assert scrub(None) is None
    assert shorten_home(str(Path.home() / "models" / "x")) == "~/models/x"
