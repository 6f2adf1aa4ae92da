"""The generated model card, eval.json, published manifest and SHA256SUMS, per format."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from qwen3_quant.artifact import load_manifest
from qwen3_quant.eval.gates import default_gates
from qwen3_quant.publish import build_bundle
from qwen3_quant.publish.bundle import CARD, CHECKSUMS, EVAL_JSON
from qwen3_quant.testing.fake_artifacts import make_artifact

SECRET = "hf_CardTestSecretToken0123456789"


def _front_matter(card: str) -> dict:
    m = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert m, "the card must start with YAML front matter"
    return yaml.safe_load(m.group(1))


def _strict_json(data: bytes):
    def no_nan(name):
        raise AssertionError(f"{name} in eval.json")

    return json.loads(data, parse_constant=no_nan)


def test_gguf_card_front_matter_table_files_and_usage(tmp_path):
    cmd = f"HF_TOKEN={SECRET} qwen3-quant quantize Qwen/Qwen3-8B --format gguf --type Q4_K_M,Q8_0 --token {SECRET}"
    art = make_artifact(tmp_path, "gguf", variants={"Q4_K_M": 4, "Q8_0": 8}, command=cmd)
    b = build_bundle(art, repo_id="my-org/Qwen3-8B-GGUF", keep_source_path=False)
    card = b.card
    meta = _front_matter(card)
    assert meta["base_model"] == "Qwen/Qwen3-8B"
    assert meta["base_model_relation"] == "quantized"
    assert meta["license"] == "apache-2.0"
    assert meta["license_link"] == "https://huggingface.co/Qwen/Qwen3-8B/blob/main/LICENSE"
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["library_name"] == "gguf"
    assert {"qwen3", "gguf", "4-bit", "8-bit", "imatrix"} <= set(meta["tags"])
    assert "validation-failed" not in meta["tags"]
    # huggingface_hub reads the same metadata back
    from huggingface_hub import ModelCard

    assert ModelCard(card).data.base_model == "Qwen/Qwen3-8B"

    m = load_manifest(art)
    for name in ("Q4_K_M", "Q8_0"):
        res = m["variants"][name]["validation"]["result"]
        assert f"| {name} |" in card
        assert f"{res['kld_mean']:.4f}" in card and f"{res['ppl_increase_pct']:+.2f}%" in card
        assert f"{res['decode_tps']:.1f}" in card and res["hardware"] in card
    for f in b.payload:
        assert f"`{f.path}`" in card and f.sha256 in card
    assert "llama-cli -hf my-org/Qwen3-8B-GGUF:Q4_K_M" in card
    assert 'Llama.from_pretrained(repo_id="my-org/Qwen3-8B-GGUF", filename="Qwen3-8B-Q4_K_M.gguf"' in card
    for switch in ("enable_thinking", "/no_think", "/think", "--reasoning off"):
        assert switch in card
    assert "calibration" in card.lower() and "ab12cd34ef56" in card  # calibration mix and its hash
    assert "qwen3-quant quantize Qwen/Qwen3-8B --format gguf --type Q4_K_M,Q8_0" in card
    assert "pip install 'qwen3-quant[gguf]'" in card

    generated = {f.path: f.data for f in b.files if f.generated}
    assert set(generated) == {CARD, EVAL_JSON, "qwen3_quant.json", CHECKSUMS}
    for data in generated.values():
        assert SECRET.encode() not in data
        assert b"/home/someone" not in data  # local paths of the source model stay on this machine
    ev = _strict_json(generated[EVAL_JSON])
    assert ev["base_model"] == "Qwen/Qwen3-8B" and not ev["forced"]
    assert (
        ev["variants"]["Q8_0"]["result"]["kld_mean"]
        == m["variants"]["Q8_0"]["validation"]["result"]["kld_mean"]
    )
    pub = json.loads(generated["qwen3_quant.json"])
    assert pub["source"]["path"] is None and set(pub["variants"]) == {"Q4_K_M", "Q8_0"}
    # SHA256SUMS lists every other file with its real sha256
    sums = dict(reversed(line.split("  ", 1)) for line in generated[CHECKSUMS].decode().splitlines())
    assert set(sums) == {f.path for f in b.files} - {CHECKSUMS}
    for f in b.files:
        if f.path != CHECKSUMS:
            data = f.data if f.generated else f.source.read_bytes()
            assert sums[f.path] == hashlib.sha256(data).hexdigest() == f.sha256


def test_split_gguf_and_local_folder_usage(tmp_path):
    art = make_artifact(tmp_path, "gguf", variants={"Q4_K_M": 4}, shards={"Q4_K_M": 3}, imatrix=False)
    card = build_bundle(art, repo_id="org/Qwen3-8B-GGUF").card
    assert 'filename="Qwen3-8B-Q4_K_M-00001-of-00003.gguf", additional_files=[' in card
    assert '"Qwen3-8B-Q4_K_M-00003-of-00003.gguf"' in card
    assert "imatrix" not in _front_matter(card)["tags"]
    local = build_bundle(art, repo_id=None).card
    assert "llama-cli -m Qwen3-8B-GGUF/Qwen3-8B-Q4_K_M-00001-of-00003.gguf" in local
    assert "-hf " not in local


@pytest.mark.parametrize("fmt", ["gptq", "awq"])
def test_gptq_awq_cards_show_transformers_vllm_sglang(tmp_path, fmt):
    art = make_artifact(tmp_path, fmt)
    repo = f"org/{art.name}"
    card = build_bundle(art, repo_id=repo).card
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and fmt in meta["tags"] and "4-bit" in meta["tags"]
    assert f'AutoModelForCausalLM.from_pretrained("{repo}"' in card
    assert "enable_thinking=False" in card
    assert f"vllm serve {repo} --reasoning-parser qwen3" in card
    assert f"sglang.launch_server --model-path {repo}" in card
    assert ("optimum gptqmodel" in card) == (fmt == "gptq")
    assert "replace_fused_blocks" not in card  # dense model


def test_moe_card_tags_and_defuser_note(tmp_path):
    art = make_artifact(tmp_path, "awq", model="Qwen3-30B-A3B", hub_id="Qwen/Qwen3-30B-A3B")
    card = build_bundle(art, repo_id="org/Qwen3-30B-A3B-AWQ").card
    assert "qwen3_moe" in _front_matter(card)["tags"]
    assert 'defuser.replace_fused_blocks("qwen3_moe")' in card


def test_onnx_card_uses_onnxruntime_genai(tmp_path):
    art = make_artifact(tmp_path, "onnx")
    card = build_bundle(art, repo_id="org/Qwen3-8B-ONNX-int4").card
    meta = _front_matter(card)
    assert meta["library_name"] == "onnxruntime-genai" and "onnx" in meta["tags"]
    assert 'og.Model("Qwen3-8B-ONNX-int4")' in card
    assert "hf download org/Qwen3-8B-ONNX-int4 --local-dir Qwen3-8B-ONNX-int4" in card
    assert "/no_think" in card and "enable_thinking=False" in card


def test_forced_card_says_so_at_the_top(tmp_path):
    art = make_artifact(
        tmp_path,
        "gguf",
        variants={"Q4_K_M": 4, "Q2_K": 2, "Q3_K_M": 3, "IQ4_XS": 4},
        validation={"Q2_K": "fail", "Q3_K_M": None, "IQ4_XS": "error"},
    )
    b = build_bundle(art, repo_id="org/Qwen3-8B-GGUF", force=True)
    card = b.card
    assert "validation-failed" in _front_matter(card)["tags"]
    warning = card.index("Published with `--force`")
    assert warning < card.index("## Validation")
    head = card[warning : card.index("## Validation")]
    g = default_gates(2)  # the double fails each gate by a margin; the limits are gates.toml's
    assert re.search(
        rf"Q2_K \(max_ppl_increase_pct [\d.]+ > {g.max_ppl_increase_pct:g}; max_kld_mean [\d.]+ > {g.max_kld_mean:g}",
        head,
    )
    assert "Q3_K_M (not validated)" in head and "IQ4_XS (validation error: llama.cpp could not load" in head
    assert "Q4_K_M" not in head
    assert "**FAIL**" in card and "**not validated**" in card
    ev = json.loads(b.file(EVAL_JSON).data)
    assert ev["forced"] and len(ev["forced_failures"]) == 3
    assert ev["variants"]["IQ4_XS"]["error"].startswith("llama.cpp could not load")


def test_variant_subset_and_licences(tmp_path):
    art = make_artifact(tmp_path / "a", "gguf", variants={"Q4_K_M": 4, "Q8_0": 8})
    b = build_bundle(art, repo_id="org/x", variants=["q8_0"])
    assert b.variants == ["Q8_0"] and all(f.variant in (None, "Q8_0") for f in b.files)
    assert "Q4_K_M" not in b.card.split("## How to run it")[0]

    fine = make_artifact(tmp_path / "b", "gguf", model="my-finetune", hub_id="someone/my-finetune")
    meta = _front_matter(build_bundle(fine, repo_id="org/y").card)
    assert meta["base_model"] == "someone/my-finetune"
    assert (
        meta["license"] == "other"
        and meta["license_name"]
        and meta["license_link"].endswith("someone/my-finetune")
    )

    # a local model: its name in a folder publish; no base_model for the Hub, which wants a model id
    micro = make_artifact(tmp_path / "c", "gguf", model="Qwen3-Micro", hub_id=None)
    meta = _front_matter(build_bundle(micro, repo_id=None).card)
    assert meta["base_model"] == "Qwen3-Micro" and meta["license"] == "apache-2.0"
    hub_card = build_bundle(micro, repo_id="org/z").card
    assert "base_model" not in _front_matter(hub_card) and "`Qwen3-Micro`" in hub_card
