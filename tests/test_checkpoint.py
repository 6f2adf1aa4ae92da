import json
import shutil

import pytest

from qwen3_quant.checkpoint import fingerprint, inspect_checkpoint
from qwen3_quant.errors import CheckpointError, MissingFileError


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    def copy(name="Qwen3-0.6B"):
        dst = tmp_path / name
        shutil.copytree(tiny_model(name), dst)
        return dst

    return copy


@pytest.mark.parametrize("name", ["Qwen3-0.6B", "Qwen3-8B", "Qwen3-30B-A3B", "Qwen3-235B-A22B"])
def test_tiny_models_pass(tiny_model, name):
    info = inspect_checkpoint(tiny_model(name))
    assert info.arch.model_type == ("qwen3_moe" if "A" in name.split("-")[-1] else "qwen3")
    assert info.expert_layout == ("per-expert" if info.arch.is_moe else "none")
    assert "tokenizer.json" in info.tokenizer_files


def test_missing_config(model_copy):
    d = model_copy()
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        inspect_checkpoint(d)


def test_not_qwen3(model_copy):
    d = model_copy()
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not Qwen3"):
        inspect_checkpoint(d)


def test_truncated_shard(model_copy):
    d = model_copy()
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated") as e:
        inspect_checkpoint(d)
    assert "re-download" in e.value.one_line()


def test_corrupt_header(model_copy):
    d = model_copy()
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"\xff" * 12
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        inspect_checkpoint(d)


def test_missing_tokenizer(model_copy):
    d = model_copy()
    (d / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer"):
        inspect_checkpoint(d)


def test_config_disagrees_with_weights(model_copy):
    d = model_copy()
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 1024
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.(gate|up|down)_proj\.weight has shape"):
        inspect_checkpoint(d)


def test_missing_layer(model_copy):
    d = model_copy()
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing, first model.layers.2"):
        inspect_checkpoint(d)


def test_missing_index_shard(model_copy):
    d = model_copy()
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(CheckpointError, match="missing shard"):
        inspect_checkpoint(d)


def test_bin_only(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen3",
                "num_hidden_layers": 1,
                "hidden_size": 8,
                "num_attention_heads": 1,
                "vocab_size": 8,
            }
        )
    )
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="PyTorch .bin weights only"):
        inspect_checkpoint(tmp_path)


def test_already_quantised(model_copy):
    d = model_copy()
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="already quantised"):
        inspect_checkpoint(d)


def test_not_a_folder(tmp_path):
    with pytest.raises(MissingFileError):
        inspect_checkpoint(tmp_path / "missing")


def test_fingerprint_changes_with_weights(model_copy):
    d = model_copy()
    before = fingerprint(d)
    assert fingerprint(d) == before
    cfg = json.loads((d / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (d / "config.json").write_text(json.dumps(cfg))
    assert fingerprint(d) != before
