import pytest

from qwen3_quant.calib import _allocate, list_mixes, load_mix, parse_mix
from qwen3_quant.errors import UsageError


@pytest.fixture(scope="module")
def tok(micro_dense):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro_dense)


def test_named_mixes():
    assert {"default", "text", "chat", "builtin"} <= set(list_mixes())
    with pytest.raises(UsageError, match="unknown calibration mix 'nope'"):
        load_mix("nope")


def test_default_mix_is_deterministic_and_follows_shares(micro_dense, shared_data):
    mix = load_mix("default")
    a = mix.build(micro_dense, samples=40, seq_len=128)
    b = mix.build(micro_dense, samples=40, seq_len=128)
    assert a.sha256 == b.sha256 and a.samples == b.samples
    s = a.summary()
    assert s["samples"] == 40 and s["tokens"] == a.n_tokens and not s["fallback"]
    assert set(s["sources"]) == {
        "english-prose",
        "multilingual",
        "math-chat-thinking",
        "math-chat-no-thinking",
        "code",
    }
    assert s["sources"]["english-prose"]["samples"] == 12 and all(len(x) <= 128 for x in a.samples)
    assert load_mix("text").build(micro_dense, samples=8, seq_len=64).sha256 != a.sha256


def test_chat_sources_render_through_the_template_with_thinking_on_and_off(micro_dense, shared_data):
    cs = load_mix("chat").build(micro_dense, samples=6, seq_len=512)
    on = [t for t, s in zip(cs.texts, cs.source_of, strict=True) if s == "math-chat-thinking"]
    off = [t for t, s in zip(cs.texts, cs.source_of, strict=True) if s == "math-chat-no-thinking"]
    assert on and off
    assert all(
        t.startswith("<|im_start|>user\n") and "<|im_start|>assistant\n<think>\n" in t for t in on + off
    )
    assert all("<think>\n\n</think>" not in t for t in on)
    assert all("<think>\n\n</think>\n\n" in t for t in off)


def test_offline_fallback(micro_dense, monkeypatch):
    import qwen3_quant.calib as calib

    monkeypatch.setattr(calib, "shared_data_dir", lambda required=False: None)
    cs = load_mix("default").build(micro_dense, samples=4, seq_len=64)
    assert cs.fallback and set(cs.skipped) == {
        "english-prose",
        "multilingual",
        "math-chat-thinking",
        "math-chat-no-thinking",
        "code",
    }
    assert len(cs.samples) == 4 and cs.summary()["sources"] == {
        "builtin-pydoc": {"samples": 4, "tokens": 256}
    }


def test_bad_mixes():
    with pytest.raises(UsageError, match="lacks 'samples'"):
        parse_mix({"name": "x", "seq_len": 8, "source": []})
    with pytest.raises(UsageError, match="unknown kind"):
        parse_mix(
            {"name": "x", "samples": 1, "seq_len": 8, "source": [{"name": "a", "kind": "pdf", "share": 1}]}
        )


def test_allocate():
    assert _allocate(10, [0.3, 0.2, 0.2, 0.1, 0.2]) == [3, 2, 2, 1, 2]
    assert sum(_allocate(7, [1, 1, 1])) == 7
