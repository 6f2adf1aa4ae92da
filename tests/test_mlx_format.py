"""MLX format: options, names, errors before work, the staging copy's config keys, the size
estimate against files mlx-lm writes, and the card's facts. Conversions of the micro models take a
second each; the MLX runtime's checks are in tests/test_mlx_micro.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen3_quant.checkpoint import inspect_checkpoint
from qwen3_quant.errors import CheckpointError, DependencyMissingError, UsageError
from qwen3_quant.formats import get_format
from qwen3_quant.formats.base import UsageContext, check_contract
from qwen3_quant.formats.mlx import FORMAT, MLXConfig
from qwen3_quant.formats.mlx.config import parse_variant
from qwen3_quant.formats.mlx.sizes import mlx_bytes, weights_bytes
from qwen3_quant.formats.mlx.staging import mlx_config, stage_checkpoint


def test_registered_and_implemented():
    assert get_format("mlx") is FORMAT
    check_contract(FORMAT)
    assert FORMAT.available()


@pytest.mark.parametrize(
    ("given", "config", "variant"),
    [
        ({}, MLXConfig(4, 64), "4bit"),
        ({"bits": 8}, MLXConfig(8, 64), "8bit"),
        ({"bits": "4", "group_size": 32}, MLXConfig(4, 32), "4bit-gs32"),
        ({"recipe": "mixed-3-6"}, MLXConfig(3, 64, "mixed_3_6"), "mixed-3-6bit"),
        ({"recipe": "mixed_4_6", "group_size": 128}, MLXConfig(4, 128, "mixed_4_6"), "mixed-4-6bit-gs128"),
    ],
)
def test_options_and_names(given, config, variant):
    cfg = FORMAT.parse_options(given)
    assert cfg == config and cfg.variant == variant
    assert parse_variant(variant) == cfg  # the table and gates read the variant name back
    assert FORMAT.artifact_name("Qwen3-30B-A3B", cfg) == f"Qwen3-30B-A3B-{variant}"


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"bits": 3}, ["MLX does not take --bits 3", "4, 8"]),
        ({"bits": 16}, ["MLX does not take --bits 16"]),
        ({"group_size": 256}, ["MLX does not take --group-size 256", "32, 64, 128"]),
        ({"recipe": "mixed_5_8"}, ["unknown MLX recipe 'mixed_5_8'", "mixed_3_6"]),
        ({"recipe": "mixed_3_6", "bits": 4}, ["--recipe and --bits both set the weight bits"]),
        ({"types": ["Q4_K_M"]}, ["--type does not apply to --format mlx", "MLX takes --bits"]),
        ({"precision": "int4"}, ["--precision does not apply to --format mlx"]),
    ],
)
def test_bad_options_are_one_line_errors(given, words):
    with pytest.raises(UsageError) as err:
        FORMAT.parse_options(given)
    line = err.value.one_line()
    assert "\n" not in line and all(w in line for w in words), line


def test_bad_variant_names():
    for bad in ("4-bit", "5bit", "mixed-5-8bit", "4bit-gs48"):
        with pytest.raises(UsageError):
            parse_variant(bad)


def test_staging_gives_mlx_lm_the_hub_key_names(micro_moe, tmp_path):
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in micro_moe.iterdir() if p.is_file()}
    staged = stage_checkpoint(micro_moe, tmp_path / "stage")
    cfg = json.loads((staged / "config.json").read_text())
    src = json.loads((micro_moe / "config.json").read_text())
    assert "num_local_experts" in src and "num_experts" not in src  # transformers 5's names
    assert cfg["num_experts"] == src["num_local_experts"]
    assert cfg["rope_theta"] == src["rope_parameters"]["rope_theta"]
    assert (staged / "model.safetensors").resolve() == (micro_moe / "model.safetensors").resolve()
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in micro_moe.iterdir() if p.is_file()}
    assert after == before  # the user's checkpoint is never modified
    # a Hub checkpoint's names are kept as they are
    hub = {**src, "num_experts": 8, "rope_theta": 1e6}
    del hub["num_local_experts"], hub["rope_parameters"]
    assert mlx_config(hub)["num_experts"] == 8 and mlx_config(hub)["rope_theta"] == 1e6


def test_a_model_mlx_cannot_run_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="cannot run architecture 'LlamaForCausalLM'"):
        mlx_config({"architectures": ["LlamaForCausalLM"]})
    with pytest.raises(CheckpointError, match="config.json has no num_hidden_layers"):
        mlx_config({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64})


def test_errors_come_before_any_work(micro_dense, tmp_path, monkeypatch):
    from qwen3_quant.formats.mlx.convert import check_group_size
    from qwen3_quant.quantize import quantize

    info = inspect_checkpoint(micro_dense)
    import dataclasses

    odd = dataclasses.replace(info, arch=dataclasses.replace(info.arch, hidden_size=320))
    with pytest.raises(CheckpointError, match="group size 128: hidden_size 320"):
        check_group_size(odd, MLXConfig(4, 128))
    monkeypatch.setattr(type(FORMAT), "available", lambda self: False)
    with pytest.raises(DependencyMissingError, match=r"qwen3-quant\[mlx\]"):
        quantize(str(micro_dense), "mlx", out_dir=tmp_path / "out", validate=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model", ["micro_dense", "micro_moe"])
@pytest.mark.parametrize("cfg", [MLXConfig(4, 64), MLXConfig(8, 32), MLXConfig(3, 64, "mixed_3_6")])
def test_size_estimate_matches_the_files_mlx_lm_writes(model, cfg, request, tmp_path):
    from qwen3_quant.formats.mlx.convert import convert_checkpoint

    src = request.getfixturevalue(model)
    quant = convert_checkpoint(src, tmp_path / "out", cfg)
    real = sum(p.stat().st_size for p in (tmp_path / "out").glob("*.safetensors"))
    est = weights_bytes(inspect_checkpoint(src).arch, cfg)
    assert abs(est - real) / real < 0.01, (est, real)  # the rest is the safetensors header
    folder = sum(p.stat().st_size for p in (tmp_path / "out").iterdir())
    whole = mlx_bytes(inspect_checkpoint(src).arch, cfg)
    assert abs(whole - folder) / folder < 0.1, (whole, folder)  # with config, tokenizer, template
    per_layer = [v for v in quant.values() if isinstance(v, dict)]
    if model == "micro_moe":  # the router stays at 8 bits, with a mixed recipe too
        assert {v["bits"] for k, v in quant.items() if k.endswith("mlp.gate")} == {8}
    if cfg.recipe:
        assert {v["bits"] for v in per_layer} >= {3, 6}
    assert not (tmp_path / "out" / "README.md").exists()  # the publish writes the card
    assert "enable_thinking" in (tmp_path / "out" / "chat_template.jinja").read_text()


def test_card_facts_and_usage():
    assert FORMAT.hub_library == "mlx"
    ctx = UsageContext("mlx", "Qwen3-8B-4bit", "me/Qwen3-8B-4bit", {"4bit": ["model.safetensors"]}, [], "mlx")
    text = FORMAT.usage(ctx)
    for words in ("mlx_lm.generate --model me/Qwen3-8B-4bit", "mlx_lm.chat", "enable_thinking=False"):
        assert words in text
    assert FORMAT.table_types == ("4bit", "8bit") and FORMAT.nominal_bits("mixed-3-6bit") == 3


def test_recognises_mlx_folders_only(tmp_path):
    folder = tmp_path / "Qwen3-Micro-4bit"
    folder.mkdir()
    FORMAT.write_test_double(folder, "Qwen3-Micro", "4bit", 4)
    assert FORMAT.recognises(folder) == "mlx"
    other = tmp_path / "gptq"
    other.mkdir()
    (other / "config.json").write_text(
        json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4}})
    )
    assert FORMAT.recognises(other) is None and FORMAT.recognises(folder / "config.json") is None


def test_listing_formats_imports_no_mlx():
    code = (
        "import sys; from qwen3_quant.formats import get_format; f = get_format('mlx'); "
        "f.parse_options({'bits': 8}); f.estimate(__import__('qwen3_quant.catalog', fromlist=['x'])"
        ".catalog()['Qwen3-8B'].arch, '4bit'); print('mlx' in sys.modules, 'mlx_lm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert out.stdout.split() == ["False", "False"]
