"""The llama.cpp runner: logits and greedy decoding against transformers, tokenisation against the
HF tokenizer, splits, and broken files as clean load errors."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from qwen3_quant.checkpoint import inspect_checkpoint  # noqa: E402
from qwen3_quant.errors import RuntimeLoadError  # noqa: E402
from qwen3_quant.eval.runner import detect_runtime, open_runner  # noqa: E402
from qwen3_quant.formats.gguf.metadata import describe  # noqa: E402
from qwen3_quant.formats.gguf.runner import LlamaCppRunner  # noqa: E402
from qwen3_quant.formats.gguf.writer import convert  # noqa: E402
from qwen3_quant.sources import resolve_model  # noqa: E402
from qwen3_quant.textdata import builtin_text  # noqa: E402


def _convert(model_dir: Path, dest: Path, out_type: str, **kw) -> list[Path]:
    src = resolve_model(str(model_dir))
    info = inspect_checkpoint(src.path)
    return convert(info, describe(src, info), dest, out_type=out_type, **kw)


@pytest.fixture(scope="module")
def dense_f32(micro_dense, tmp_path_factory) -> Path:
    return _convert(micro_dense, tmp_path_factory.mktemp("r") / "Qwen3-Micro-F32.gguf", "F32")[0]


@pytest.fixture(scope="module")
def hf_tok(micro_dense):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_dense)
    tok.model_max_length = 1 << 30
    return tok


def _window(tok, n: int) -> list[int]:
    return tok(builtin_text()[:20000], add_special_tokens=False)["input_ids"][:n]


def _parity(model_dir: Path, gguf_file: Path, ids: list[int]) -> None:
    from qwen3_quant.eval.transformers_runner import TransformersRunner

    with TransformersRunner(model_dir, ctx=512) as ref:
        want = ref.logits(ids)
        want_gen = ref.generate(ids[:40], 12).tokens
    with LlamaCppRunner(gguf_file, ctx=512, threads=1, kv_type="f32") as r:
        got = r.logits(ids)
        got_gen = r.generate(ids[:40], 12).tokens
        assert got.shape == want.shape == (len(ids), r.n_vocab)
        print(f"{gguf_file.name}: max abs logit difference {np.abs(got - want).max():.2e}")
        assert np.abs(got - want).max() <= 1e-3, np.abs(got - want).max()
        assert got_gen == want_gen  # greedy decoding with the KV cache
        # the same window again, from an empty cache, gives the same numbers
        assert np.array_equal(r.logits(ids), got)


@pytest.mark.slow
def test_f32_dense_logits_match_transformers(micro_dense, dense_f32, hf_tok):
    _parity(micro_dense, dense_f32, _window(hf_tok, 300))


@pytest.mark.slow
def test_f32_moe_logits_match_transformers(micro_moe, hf_tok, tmp_path):
    moe_f32 = _convert(micro_moe, tmp_path / "Qwen3-Micro-MoE-F32.gguf", "F32")[0]
    _parity(micro_moe, moe_f32, _window(hf_tok, 300))


def test_runner_basics(dense_f32, micro_dense):
    assert detect_runtime(dense_f32) == "llama.cpp"
    with open_runner(dense_f32, ctx=64, threads=1) as r:
        assert isinstance(r, LlamaCppRunner)
        assert r.max_context == 512  # qwen3.context_length from the config
        assert r.meta("general.architecture") == "qwen3" and r.meta("no.such.key") is None
        t = r.generate(list(range(100, 120)), 5)
        assert t.prompt_tokens == 20 and t.new_tokens == 5 and t.prefill_seconds > 0
        with pytest.raises(Exception, match="do not fit"):
            r.logits(list(range(65)))


def test_splits_load_and_match_the_single_file(micro_dense, dense_f32, tmp_path, hf_tok):
    parts = _convert(micro_dense, tmp_path / "s" / "Qwen3-Micro-F32.gguf", "F32", max_shard_size=8_000_000)
    assert len(parts) > 2
    ids = _window(hf_tok, 64)
    with LlamaCppRunner(parts[0], ctx=64, threads=1, kv_type="f32") as r:
        split_logits = r.logits(ids)
    with LlamaCppRunner(dense_f32, ctx=64, threads=1, kv_type="f32") as r:
        assert np.array_equal(split_logits, r.logits(ids))
    parts[-1].unlink()
    with pytest.raises(RuntimeLoadError, match="is missing"):
        LlamaCppRunner(parts[0], ctx=64)


def test_logits_in_blocks_equal_the_window_logits(dense_f32):
    ids = list(np.random.default_rng(0).integers(0, 8000, 300))
    with LlamaCppRunner(dense_f32, ctx=512, kv_type="f32") as r:  # f16 keys round differently by batch
        whole = r.logits(ids)
        r.ubatch = 128  # three blocks, decoded one after the other with the KV cache
        blocks = [(a, b.copy()) for a, b in r.logits_blocks(ids)]  # a block is valid until the next
    assert [a for a, _ in blocks] == [0, 128, 256]
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), whole, atol=1e-5)


def test_tokenizer_matches_hf_on_udhr(dense_f32, hf_tok, shared_data):
    """All 60 UDHR languages (Chinese, Japanese, Arabic, Hindi, ...), whole files.

    llama.cpp does not apply the tokenizer's NFC normaliser: files already in NFC match as they
    are, and every file matches once NFC-normalised (8 files are not in NFC: Hindi, Bengali,
    Vietnamese, ...)."""
    files = sorted((shared_data / "multilingual" / "udhr2").glob("*.txt"))
    assert len(files) == 60
    not_nfc = []
    with LlamaCppRunner(dense_f32, ctx=32, threads=1) as r:
        for f in files:
            text = f.read_text(encoding="utf-8")
            want = hf_tok(text, add_special_tokens=False)["input_ids"]
            nfc = unicodedata.normalize("NFC", text)
            assert r.tokenize(nfc) == want, f.name
            if nfc == text:
                assert r.tokenize(text) == want, f.name
            else:
                not_nfc.append(f.stem)
    assert {"cmn_hans", "jpn", "arb", "hin"} <= {f.stem for f in files}
    assert len(not_nfc) < 15, not_nfc


def test_tokenizer_matches_hf_on_chat_template(dense_f32, hf_tok):
    messages = [
        {"role": "system", "content": "You answer in one line."},
        {"role": "user", "content": "2+2? 用中文回答。 <tool_call> is literal here"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two and two make four."},
        {"role": "user", "content": "And in Arabic? أربعة"},
    ]
    with LlamaCppRunner(dense_f32, ctx=32, threads=1) as r:
        for thinking in (True, False):
            text = hf_tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
            )
            assert "<|im_start|>" in text
            want = hf_tok(text, add_special_tokens=False)["input_ids"]
            got = r.tokenize(text)
            assert got == want
            assert hf_tok.convert_tokens_to_ids("<|im_start|>") in got  # one special token, not text
        # without parsing specials, llama.cpp spells control tokens out as text (user-defined stay tokens)
        plain = r.tokenize("<|im_end|><think>", parse_special=False)
        assert hf_tok.convert_tokens_to_ids("<|im_end|>") not in plain
        assert hf_tok.convert_tokens_to_ids("<think>") in plain


# --- broken files ------------------------------------------------------------------------------


def test_broken_files_are_load_errors(dense_f32, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    with open(dense_f32, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read(dense_f32.stat().st_size // 2))
    with pytest.raises(RuntimeLoadError, match="truncated"):
        LlamaCppRunner(truncated, ctx=64)

    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    with pytest.raises(RuntimeLoadError, match="not a readable GGUF"):
        LlamaCppRunner(garbage, ctx=64)

    # a well-formed file llama.cpp itself refuses: the architecture renamed
    alien = tmp_path / "alien.gguf"
    data = bytearray(dense_f32.read_bytes())
    i = data.index(b"qwen3", data.index(b"general.architecture"))
    data[i : i + 5] = b"qwen9"
    alien.write_bytes(bytes(data))
    with pytest.raises(RuntimeLoadError, match="llama.cpp could not load alien.gguf: .*qwen9"):
        LlamaCppRunner(alien, ctx=64)


@pytest.mark.slow
def test_broken_variant_is_recorded_as_failed(micro_dense, tmp_path, cache_dir):
    """validate_artifact() marks a variant that does not load as failed instead of crashing."""
    from qwen3_quant.artifact import load_manifest, record_variant
    from qwen3_quant.eval.evaluate import EvalOptions
    from qwen3_quant.validate import validate_artifact

    folder = tmp_path / "Qwen3-Micro-GGUF"
    folder.mkdir()
    (folder / "Qwen3-Micro-Q4_K_M.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    source = {"spec": "Qwen3-Micro", "name": "Qwen3-Micro", "path": str(micro_dense), "fingerprint": "x"}
    record_variant(
        folder,
        name=folder.name,
        fmt="gguf",
        source=source,
        variant="Q4_K_M",
        files=["Qwen3-Micro-Q4_K_M.gguf"],
        recipe={"bits": 4, "type": "Q4_K_M"},
    )
    (res,) = validate_artifact(folder, "Q4_K_M", options=EvalOptions(max_tokens=64, ctx=32, speed=False))
    assert res.passed is False
    v = load_manifest(folder)["variants"]["Q4_K_M"]["validation"]
    assert v["passed"] is False and "Qwen3-Micro-Q4_K_M.gguf" in v["error"]
