"""End to end on the bundled micro model: an artifact folder validated for real in its runtime, published
to a folder (whose copy measures the same) and to the fake Hub; a damaged copy of the weights fails
its real validation and is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from qwen3_quant.artifact import load_manifest, record_variant
from qwen3_quant.errors import ValidationFailedError
from qwen3_quant.eval.evaluate import EvalOptions, evaluate
from qwen3_quant.provenance import Provenance
from qwen3_quant.publish import publish
from qwen3_quant.publish.bundle import CARD, CHECKSUMS, EVAL_JSON
from qwen3_quant.testing.fake_hub import FakeHub
from qwen3_quant.validate import validate_artifact

pytestmark = pytest.mark.slow

OPTS = EvalOptions(max_tokens=300, ctx=128, prompt_tokens=32, decode_tokens=8, repeats=1)
SHARED = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory):
    """One cache for the module: the base model's reference log-probabilities are computed once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(reference_cache, monkeypatch):
    monkeypatch.setenv("QWEN3_QUANT_CACHE", str(reference_cache))
    return reference_cache


def _bf16_artifact(src: Path, root: Path, name: str, damage: float = 0.0) -> Path:
    """The micro model's own weights as the BF16 variant of a transformers-format artifact folder
    (``damage``: relative noise added to every matrix, to make a variant that must fail)."""
    folder = root / name
    folder.mkdir(parents=True)
    for f in SHARED:
        shutil.copy(src / f, folder / f)
    if damage:
        import torch
        from safetensors.torch import load_file, save_file

        g = torch.Generator().manual_seed(0)
        tensors = load_file(src / "model.safetensors")
        for k, t in tensors.items():
            if t.ndim == 2:
                noise = torch.randn(t.shape, generator=g) * t.float().std() * damage
                tensors[k] = (t.float() + noise).to(t.dtype)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    else:
        shutil.copy(src / "model.safetensors", folder / "model.safetensors")
    source = {
        "spec": "Qwen3-Micro",
        "name": "Qwen3-Micro",
        "hub_id": None,
        "revision": None,
        "path": str(src),
        "fingerprint": None,
    }
    record_variant(
        folder,
        name=name,
        fmt="transformers",
        source=source,
        variant="BF16",
        files=["model.safetensors"],
        recipe={"bits": 16, "dtype": "bfloat16"},
        shared_files=SHARED,
        provenance=Provenance("cli", f"qwen3-quant quantize Qwen3-Micro -o {folder}"),
    )
    return folder


def test_validated_micro_artifact_published_to_a_folder_and_the_hub(
    micro_dense, tmp_path, cache, monkeypatch
):
    art = _bf16_artifact(micro_dense, tmp_path / "art", "Qwen3-Micro-BF16")
    [res] = validate_artifact(art, options=OPTS)
    assert res.passed and res.kld_mean is not None and res.decode_tps > 0
    recorded = load_manifest(art)["variants"]["BF16"]["validation"]["result"]

    dest = tmp_path / "pub" / "Qwen3-Micro-BF16"
    out = publish(art, dest)
    card = (dest / CARD).read_text()
    for key, spec in (
        ("perplexity", ".4g"),
        ("base_perplexity", ".4g"),
        ("kld_mean", ".4f"),
        ("prefill_tps", ".1f"),
        ("decode_tps", ".1f"),
    ):
        assert format(recorded[key], spec) in card, key
    assert recorded["hardware"] in card and "| BF16 |" in card and "| pass |" in card
    ev = json.loads((dest / EVAL_JSON).read_text())
    for key in ("perplexity", "kld_mean", "top1_agreement", "decode_tps", "peak_rss_bytes"):
        assert ev["variants"]["BF16"]["result"][key] == recorded[key]
    assert 'AutoModelForCausalLM.from_pretrained("Qwen3-Micro-BF16"' in card
    if shutil.which("sha256sum"):
        chk = subprocess.run(
            ["sha256sum", "-c", CHECKSUMS], cwd=dest, capture_output=True, text=True, timeout=60
        )
        assert chk.returncode == 0, chk.stdout
    # the published copy is the same model: it measures the same in the runtime
    again = evaluate(dest, options=EvalOptions(max_tokens=300, ctx=128, speed=False))
    assert again.perplexity == pytest.approx(recorded["perplexity"], rel=1e-6)
    assert again.kld_mean == pytest.approx(0.0, abs=1e-6)

    from huggingface_hub import constants

    token = "hf_e2eSecretToken0123456789abcdef"
    with FakeHub(token) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", token)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        up = publish(art, "hf://me/Qwen3-Micro-BF16")
        assert not hub.unexpected
        for f in up.files:
            assert hub.content("me/Qwen3-Micro-BF16", f.path) == (
                f.data if f.generated else (art / f.path).read_bytes()
            )
        assert hub.validated_yaml[-1]["library_name"] == "transformers"
        assert "base_model" not in hub.validated_yaml[-1]  # a local model has no Hub id to name
        assert json.loads(hub.content("me/Qwen3-Micro-BF16", "qwen3_quant.json"))["source"]["path"] is None
    assert {f.path for f in out.files} == {f.path for f in up.files}


def test_a_variant_that_really_fails_validation_is_refused(micro_dense, tmp_path, cache):
    art = _bf16_artifact(micro_dense, tmp_path / "art", "Qwen3-Micro-Damaged", damage=0.5)
    [res] = validate_artifact(art, options=OPTS)
    assert res.passed is False
    failed = [g["name"] for g in res.gates if not g["passed"]]
    with pytest.raises(ValidationFailedError) as err:
        publish(art, tmp_path / "pub")
    assert f"refusing to publish Qwen3-Micro-Damaged: BF16 ({failed[0]}" in err.value.one_line()
    assert not (tmp_path / "pub").exists()
    forced = publish(art, tmp_path / "pub", force=True)
    assert forced.forced and "Published with `--force`" in (tmp_path / "pub" / CARD).read_text()
