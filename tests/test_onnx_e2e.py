"""``quantize(..., "onnx")`` and ``qwen3-quant quantize --format onnx`` end to end on the micro models,
and what happens on a full disk, an interrupted run, an existing artifact and a model the builder
cannot take."""

from __future__ import annotations

import errno
import json
import shutil

import pytest

from qwen3_quant.artifact import load_manifest, verify_files
from qwen3_quant.errors import ArtifactExistsError, CheckpointError, DiskFullError
from qwen3_quant.eval.evaluate import EvalOptions
from qwen3_quant.io import partial_path
from qwen3_quant.quantize import quantize

pytestmark = pytest.mark.slow

FAST_EVAL = EvalOptions(ctx=256, max_tokens=1024, prompt_tokens=32, decode_tokens=8, repeats=1)


@pytest.fixture(scope="module")
def int4_artifact(micro_dense, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "Qwen3-Micro-ONNX-int4"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN3_QUANT_CACHE", str(tmp_path_factory.mktemp("cache")))
        res = quantize(str(micro_dense), "onnx", out_dir=out, precision="int4", eval_options=FAST_EVAL)
    return out, res


def test_quantize_int4_with_validation(int4_artifact, micro_dense):
    out, res = int4_artifact
    assert res.variants == ["int4"] and res.format == "onnx" and res.artifact_dir == out
    assert res.passed is True
    (v,) = res.validations
    assert v.runtime == "onnxruntime" and v.kld_mean is not None and v.decode_tps > 0 and v.prefill_tps > 0
    m = load_manifest(out)
    assert m["name"] == "Qwen3-Micro-ONNX-int4" and m["format"] == "onnx"
    assert m["source"]["path"] == str(micro_dense) and m["source"]["fingerprint"]
    variant = m["variants"]["int4"]
    assert variant["files"] == ["model.onnx", "model.onnx.data"]
    recipe = variant["recipe"]
    assert recipe["bits"] == 4 and recipe["block_size"] == 32 and recipe["quantizer"] == "rtn"
    assert recipe["exporter"] == "onnxruntime-genai model builder" and recipe["builder"]["version"]
    assert (
        recipe["tied_embedding_shared"] is True
        and recipe["graph"]["GatherBlockQuantized"] == "1 x int4, block 32"
    )
    assert recipe["graph"]["MatMulNBits"] == "21 x int4, block 32, accuracy level 4"
    assert variant["validation"]["passed"] is True
    shared = (
        "genai_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "config.json",
    )
    for f in shared:
        assert f in m["files"]
    assert verify_files(out, m) == []
    assert not partial_path(out).exists()


def test_rerun_keeps_an_intact_artifact_and_refuses_a_different_one(int4_artifact, micro_dense):
    out, _ = int4_artifact
    before = load_manifest(out)["files"]["model.onnx.data"]
    res = quantize(str(micro_dense), "onnx", out_dir=out, precision="int4", validate=False)
    assert res.variants == ["int4"] and load_manifest(out)["files"]["model.onnx.data"] == before
    with pytest.raises(ArtifactExistsError, match="block_size 32, not 64"):
        quantize(str(micro_dense), "onnx", out_dir=out, precision="int4", block_size=64, validate=False)
    with pytest.raises(ArtifactExistsError, match="holds no ONNX int8 artifact"):
        quantize(str(micro_dense), "onnx", out_dir=out, precision="int8", validate=False)


def test_damaged_artifact_is_refused_then_rebuilt_with_overwrite(int4_artifact, micro_dense, tmp_path):
    src, _ = int4_artifact
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    with open(out / "model.onnx.data", "r+b") as fh:
        fh.write(b"\0" * 64)
    with pytest.raises(ArtifactExistsError, match="damaged: model.onnx.data"):
        quantize(str(micro_dense), "onnx", out_dir=out, precision="int4", validate=False)
    quantize(str(micro_dense), "onnx", out_dir=out, precision="int4", validate=False, overwrite=True)
    assert verify_files(out, load_manifest(out)) == []


def test_cli_quantize_moe_int8(micro_moe, tmp_path, cache_dir):
    from click.testing import CliRunner

    from qwen3_quant.cli import main

    out = tmp_path / "moe-int8"
    args = ["quantize", str(micro_moe), "--format", "onnx", "--precision", "int8", "-o", str(out)]
    args += ["--ctx", "256", "--max-tokens", "1024", "--json-out", str(tmp_path / "r.json")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert str(out) in r.output.replace("\n", "")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["variants"] == ["int8"] and report["validations"][0]["passed"] is True
    recipe = load_manifest(out)["variants"]["int8"]["recipe"]
    assert recipe["exporter"].startswith("qwen3-quant Qwen3-MoE exporter")
    assert recipe["graph"]["QMoE"] == "4 x int8, block 32" and recipe["weights"]["router"] == "fp32"
    assert recipe["graph"]["MatMul"] == "4 (float)"  # the routers


def test_full_disk_is_refused_before_any_work(micro_dense, tmp_path, monkeypatch):
    monkeypatch.setattr("qwen3_quant.io.free_bytes", lambda _p: 1_000_000)
    out = tmp_path / "a" / "Qwen3-Micro-ONNX-int4"
    with pytest.raises(DiskFullError, match="not enough disk space to write Qwen3-Micro-ONNX-int4"):
        quantize(str(micro_dense), "onnx", out_dir=out, precision="int4", validate=False)
    assert not out.exists() and not partial_path(out).exists()


def _failing_save(monkeypatch, exc):
    """The exporter has written the layers' data, then its save fails the way a full disk or Ctrl-C would."""
    from qwen3_quant.formats.onnx.stream import StreamingBuilderMixin

    def save_model(self, out_dir):
        self.data_file.close()
        with open(f"{out_dir}/model.onnx", "wb") as fh:
            fh.write(b"\1" * 4096)
        raise exc

    monkeypatch.setattr(StreamingBuilderMixin, "save_model", save_model)


def test_disk_filling_up_mid_write_leaves_nothing(micro_dense, tmp_path, monkeypatch):
    _failing_save(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "Qwen3-Micro-ONNX-fp32"
    with pytest.raises(DiskFullError, match="the disk filled up while writing"):
        quantize(str(micro_dense), "onnx", out_dir=out, precision="fp32", validate=False)
    assert not out.exists() and not partial_path(out).exists()


def test_interrupted_run_leaves_nothing_and_a_killed_one_is_redone(micro_moe, tmp_path, monkeypatch):
    out = tmp_path / "Qwen3-Micro-MoE-ONNX-fp32"
    with monkeypatch.context() as mp:
        _failing_save(mp, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            quantize(str(micro_moe), "onnx", out_dir=out, precision="fp32", validate=False)
    assert not out.exists() and not partial_path(out).exists()
    # a killed process leaves its temporary folder behind: the next run starts it again
    stale = partial_path(out)
    stale.mkdir()
    (stale / "model.onnx.data").write_bytes(b"\1" * 4096)
    quantize(str(micro_moe), "onnx", out_dir=out, precision="fp32", validate=False)
    assert not stale.exists() and verify_files(out, load_manifest(out)) == []


def test_an_architecture_the_builder_cannot_take(micro_dense, tmp_path):
    src = tmp_path / "classifier"
    shutil.copytree(micro_dense, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["Qwen3ForSequenceClassification"]
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="cannot convert architecture 'Qwen3ForSequenceClassification'"):
        quantize(str(src), "onnx", out_dir=out, precision="int4", validate=False)
    assert not out.exists() and not partial_path(out).exists()


def test_a_builder_failure_is_one_clear_error(micro_dense, tmp_path, monkeypatch):
    import onnxruntime_genai.models  # noqa: F401
    from builders.base import Model

    def make_layer(self, layer_id, layer):  # the builder giving up mid-model, after layer 0's data
        if layer_id:
            raise NotImplementedError("The Qwen3ForCausalLM model is not currently supported.")
        return original(self, layer_id, layer)

    original = Model.make_layer
    monkeypatch.setattr(Model, "make_layer", make_layer)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="could not convert Qwen3-Micro: The Qwen3ForCausalLM model"):
        quantize(str(micro_dense), "onnx", out_dir=out, precision="int4", validate=False)
    assert not out.exists() and not partial_path(out).exists()
