"""The Ollama files of GGUF repos: ``params`` (sampling and stop tokens from the model's own files)
and ``template`` only when the Hub cannot map the chat template; present and valid in every
published GGUF repo (fake Hub and folder), and the card's Ollama / LM Studio lines name files that
exist."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from qwen3_quant.formats.gguf.ollama import CHATML_TEMPLATE, PARAMS, TEMPLATE, ollama_files, ollama_params
from qwen3_quant.publish import publish
from qwen3_quant.testing.fake_artifacts import make_artifact


@pytest.fixture
def checkpoint(micro_dense, tmp_path):
    """A copy of the micro model's small files, to edit."""
    out = tmp_path / "ckpt"
    out.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(micro_dense / name, out / name)
    return out


def test_params_come_from_the_models_own_files(checkpoint):
    gen = json.loads((checkpoint / "generation_config.json").read_text())
    tokens = {
        t["id"]: t["content"] for t in json.loads((checkpoint / "tokenizer.json").read_text())["added_tokens"]
    }
    params = ollama_params(checkpoint)
    assert (params["temperature"], params["top_p"], params["top_k"]) == (
        gen["temperature"],
        gen["top_p"],
        gen["top_k"],
    )
    assert params["stop"][: len(gen["eos_token_id"])] == [tokens[i] for i in gen["eos_token_id"]]
    assert "<|im_start|>" in params["stop"]  # the template's turn start
    # other values in the model's files give other params: nothing is a constant
    gen.update(temperature=0.3, top_k=5, min_p=0.05, eos_token_id=[8103])
    (checkpoint / "generation_config.json").write_text(json.dumps(gen))
    params = ollama_params(checkpoint)
    assert (params["temperature"], params["top_k"], params["min_p"]) == (0.3, 5, 0.05)
    assert params["stop"][0] == tokens[8103]


def test_template_only_when_the_hub_cannot_map_the_chat_template(checkpoint):
    assert TEMPLATE not in ollama_files(checkpoint)  # Qwen3's template, thinking switch included
    cfg = json.loads((checkpoint / "tokenizer_config.json").read_text())
    cfg["chat_template"] = cfg["chat_template"].replace("enable_thinking", "thinking_on")
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert ollama_files(checkpoint)[TEMPLATE].decode() == CHATML_TEMPLATE


def _check_repo_files(files: dict[str, bytes], card: str, repo: str | None):
    params = json.loads(files[PARAMS])
    assert params["temperature"] == 0.6 and params["stop"]  # the micro model's generation_config
    assert TEMPLATE not in files
    if repo:
        for t in ("Q4_K_M", "Q8_0"):
            assert f"ollama run hf.co/{repo}:{t}" in card
        named = re.findall(r"`(Qwen3-8B-[^`]+\.gguf)`", card.split("### LM Studio", 1)[1])
        assert named and all(n in files for n in named)
        assert f"`{PARAMS}` file" in card and "/no_think" in card and "temperature 0.7" in card
    assert f"`{PARAMS}` file" not in card or PARAMS in files


def test_folder_publish_carries_the_ollama_files(tmp_path):
    art = make_artifact(tmp_path / "art", "gguf", variants={"Q4_K_M": 4, "Q8_0": 8}, ollama=True)
    dest = tmp_path / "pub" / "Qwen3-8B-GGUF"
    res = publish(art, dest)
    files = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    _check_repo_files(files, res.card, None)
    assert "ollama create" in res.card


def test_hub_publish_carries_the_ollama_files(tmp_path, monkeypatch, cache_dir):
    import secrets

    from huggingface_hub import constants

    from qwen3_quant.testing.fake_hub import FakeHub

    token = "hf_" + secrets.token_hex(16)
    repo = "test-org/Qwen3-8B-GGUF"
    art = make_artifact(tmp_path / "art", "gguf", variants={"Q4_K_M": 4, "Q8_0": 8}, ollama=True)
    with FakeHub(token) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        res = publish(art, f"hf://{repo}")
        files = {p: hub.content(repo, p) for p in hub.files(repo) if p != ".gitattributes"}
    _check_repo_files(files, res.card, repo)
