"""The typed manifest and the one keep-or-rebuild rule every format follows."""

from __future__ import annotations

import json

import pytest

from qwen3_quant.artifact import (
    Manifest,
    ValidationRecord,
    VariantKey,
    decide_variant,
    load_manifest,
    record_validation,
    record_variant,
)
from qwen3_quant.errors import ArtifactExistsError
from qwen3_quant.provenance import Provenance


def _record(dest, variant, key, files=("model.safetensors",)):
    for f in files:
        (dest / f).write_bytes(b"weights " + f.encode())
    record_variant(
        dest, name=dest.name, fmt=key.format, source={}, variant=variant, files=list(files),
        recipe={"bits": 4}, key=key,
    )  # fmt: skip


def test_existing_artifact_is_kept_only_when_identical_and_intact(tmp_path):
    dest = tmp_path / "M-GPTQ-Int4"
    k1 = VariantKey("gptq", "W4g128", "fp", {"k": 1})
    k2 = VariantKey("gptq", "W4g128", "fp", {"k": 2})
    assert decide_variant(dest, k1, overwrite=False)  # nothing there: build
    dest.mkdir()
    _record(dest, "W4g128", k1)
    assert not decide_variant(dest, k1, overwrite=False)  # the same recipe, intact: kept
    assert decide_variant(dest, k2, overwrite=True)
    with pytest.raises(ArtifactExistsError, match="does not hold W4g128"):
        decide_variant(dest, k2, overwrite=False)
    with pytest.raises(ArtifactExistsError, match="does not hold W8g128"):
        decide_variant(dest, VariantKey("gptq", "W8g128", "fp", {"k": 1}), overwrite=False)
    (dest / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(ArtifactExistsError, match="model.safetensors differs"):
        decide_variant(dest, k1, overwrite=False)


def test_differences_name_the_setting_and_the_checkpoint(tmp_path):
    dest = tmp_path / "M-ONNX-int4"
    dest.mkdir()
    _record(dest, "int4", VariantKey("onnx", "int4", "fp", {"block_size": 32, "precision": "int4"}))
    with pytest.raises(ArtifactExistsError, match="block_size 32, not 64"):
        decide_variant(
            dest, VariantKey("onnx", "int4", "fp", {"block_size": 64, "precision": "int4"}), overwrite=False
        )
    with pytest.raises(ArtifactExistsError, match="another checkpoint"):
        decide_variant(
            dest,
            VariantKey("onnx", "int4", "other", {"block_size": 32, "precision": "int4"}),
            overwrite=False,
        )
    with pytest.raises(ArtifactExistsError, match="holds no ONNX int8 artifact, only int4"):
        decide_variant(dest, VariantKey("onnx", "int8", "fp", {}), overwrite=False)


def test_a_folder_of_several_variants_adds_rebuilds_and_protects(tmp_path):
    """GGUF's policy: types join one folder; a damaged type is rebuilt; a stranger's file is not touched."""
    dest = tmp_path / "M-GGUF"
    dest.mkdir()
    q8 = VariantKey("gguf", "Q8_0", "fp", {"type": "Q8_0"})
    _record(dest, "Q8_0", q8, files=("M-Q8_0.gguf",))
    rule = {"shares_folder": True, "rebuild_damaged": True}
    q4 = VariantKey("gguf", "Q4_K_M", "fp", {"type": "Q4_K_M"})
    assert decide_variant(dest, q4, overwrite=False, expected_files=["M-Q4_K_M.gguf"], **rule)
    assert not decide_variant(dest, q8, overwrite=False, expected_files=["M-Q8_0.gguf"], **rule)
    (dest / "M-Q8_0.gguf").write_bytes(b"truncated")
    assert decide_variant(dest, q8, overwrite=False, expected_files=["M-Q8_0.gguf"], **rule)
    (dest / "M-Q6_K.gguf").write_bytes(b"someone else's file")
    q6 = VariantKey("gguf", "Q6_K", "fp", {"type": "Q6_K"})
    with pytest.raises(ArtifactExistsError, match="not recorded"):
        decide_variant(dest, q6, overwrite=False, expected_files=["M-Q6_K.gguf"], **rule)


def test_manifest_round_trip_and_schema_1(tmp_path):
    dest = tmp_path / "a"
    dest.mkdir()
    key = VariantKey("gptq", "W4g128", "fp", {"group_size": 128, "calib": ("a", "b")})
    (dest / "w.bin").write_bytes(b"x")
    record_variant(
        dest, name="a", fmt="gptq", source={"name": "M"}, variant="W4g128", files=["w.bin"], recipe={"bits": 4},
        key=key, provenance=Provenance("python", "quantize('M', 'gptq')"),
    )  # fmt: skip
    record_validation(dest, "W4g128", ValidationRecord(True, {"max_kld_mean": 0.2}, {"kld_mean": 0.01}))
    m = Manifest.read(dest)
    assert m.to_dict() == load_manifest(dest)
    assert m.variants["W4g128"].key.normalised() == key.normalised()  # tuples come back as lists
    assert m.variants["W4g128"].provenance.language == "python" and m.variants["W4g128"].bits == 4
    # a manifest written before typed keys: read, and never taken for the same recipe
    old = load_manifest(dest)
    old["schema"] = 1
    v = old["variants"]["W4g128"]
    v["command"] = "qwen3-quant quantize M --format gptq"
    del v["key"], v["provenance"]
    (dest / "qwen3_quant.json").write_text(json.dumps(old))
    m = Manifest.read(dest)
    assert m.variants["W4g128"].provenance.command.startswith("qwen3-quant quantize")
    with pytest.raises(ArtifactExistsError, match="older qwen3-quant"):
        decide_variant(dest, key, overwrite=False)
