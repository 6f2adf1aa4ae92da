"""Calibration as GPTQ / AWQ use it: deterministic tokens, chat through the model's own template
with thinking on and off, and what gets recorded."""

from __future__ import annotations

import json
import sys

import pytest

from qwen3_quant.calib import load_mix, parse_mix
from qwen3_quant.errors import CalibrationError, DependencyMissingError

QA = [
    {"question": f"What is {a} + {b}?", "answer": f"Add {a} and {b} to get {a + b}.\n#### {a + b}"}
    for a, b in [(2, 3), (10, 7), (4, 4), (12, 30)]
]


QA_FIELDS = {"user": "{question}", "assistant": "{answer}"}


def chat_mix(path, **extra):
    src = {"name": "qa", "kind": "jsonl-chat", "path": str(path), "share": 1.0, **extra}
    return parse_mix({"name": "t", "samples": 4, "seq_len": 96, "seed": 3, "source": [src]})


@pytest.fixture
def qa_file(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in QA))
    return f


def test_same_mix_same_tokens(micro_dense):
    a = load_mix("builtin").build(micro_dense, samples=5, seq_len=40)
    b = load_mix("builtin").build(micro_dense, samples=5, seq_len=40)
    assert a.samples == b.samples and a.sha256 == b.sha256
    assert a.n_tokens == sum(len(s) for s in a.samples) and all(len(s) <= 40 for s in a.samples)
    other = parse_mix(
        {
            "name": "b",
            "samples": 5,
            "seq_len": 40,
            "seed": 1,
            "source": [{"name": "p", "kind": "text", "path": "builtin:pydoc", "share": 1}],
        }
    ).build(micro_dense)
    assert other.sha256 != a.sha256  # another seed, other passages


def test_thinking_on_and_off_render_differently_through_the_template(micro_dense, qa_file):
    on = chat_mix(qa_file, thinking=True, fields={"user": "{question}", "assistant": "{answer}"}).build(
        micro_dense
    )
    off = chat_mix(qa_file, thinking=False, fields={"user": "{question}", "assistant": "{answer}"}).build(
        micro_dense
    )
    assert on.texts != off.texts and on.sha256 != off.sha256
    for text in on.texts:
        assert text.startswith("<|im_start|>user\n") and "<think>\nAdd " in text
    for text in off.texts:
        assert (
            text.startswith("<|im_start|>user\n") and "<think>\nAdd" not in text and "The answer is" in text
        )


def test_rows_of_messages_render_through_the_template(micro_dense, tmp_path):
    f = tmp_path / "msgs.jsonl"
    row = {
        "messages": [
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "7", "reasoning_content": "Seven has no divisors."},
        ]
    }
    f.write_text(json.dumps(row) + "\n")
    on = chat_mix(f, thinking=True).build(micro_dense, samples=1)
    off = chat_mix(f, thinking=False).build(micro_dense, samples=1)
    assert "<|im_start|>assistant\n<think>\nSeven has no divisors." in on.texts[0]
    assert "Seven" not in off.texts[0] and off.texts[0].rstrip().endswith("7<|im_end|>")


def test_an_unreadable_hub_source_fails_the_build_in_one_line(micro_dense, qa_file, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mix = parse_mix(
        {
            "name": "m",
            "samples": 4,
            "seq_len": 32,
            "source": [
                {"name": "qa", "kind": "jsonl-chat", "path": str(qa_file), "share": 0.5, "fields": QA_FIELDS},
                {"name": "hub", "kind": "hf-dataset", "dataset": "no-such-org/no-such-set", "share": 0.5},
            ],
        }
    )
    with pytest.raises(
        CalibrationError, match="source hub: Hub dataset no-such-org/no-such-set cannot be read"
    ) as e:
        mix.build(micro_dense)
    assert "\n" not in e.value.one_line() and "--calib default" in e.value.hint


def test_hub_dataset_without_the_datasets_extra_names_the_extra(micro_dense, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    mix = parse_mix(
        {
            "name": "h",
            "samples": 2,
            "seq_len": 16,
            "source": [{"name": "hub", "kind": "hf-dataset", "dataset": "x/y", "share": 1}],
        }
    )
    with pytest.raises(DependencyMissingError, match="datasets is not installed") as e:
        mix.build(micro_dense)
    assert "qwen3-quant[datasets]" in e.value.hint
