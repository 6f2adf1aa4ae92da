"""Calibration mixes: the packaged default set, named mixes, user files, and errors in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen3_quant.calib import allocate, list_mixes, load_mix, parse_mix
from qwen3_quant.errors import CalibrationError, UsageError

TEST_MIXES = Path(__file__).parent / "mixes"
DEFAULT_SOURCES = {
    "english-prose",
    "multilingual",
    "math-chat-thinking",
    "math-chat-no-thinking",
    "code",
    "code-chat",
    "tool-calls-thinking",
    "tool-calls-no-thinking",
}


@pytest.fixture
def no_shared_data(monkeypatch):
    """As on a user's machine: no shared data folder anywhere."""
    import qwen3_quant.calib.material as material

    monkeypatch.setattr(material, "shared_data_dir", lambda required=False: None)


def test_named_mixes_ship_in_the_package_and_read_no_shared_data():
    mixes = list_mixes()
    assert {"default", "text", "chat", "builtin", "hub", "generated"} <= set(mixes)
    assert all("qwen3_quant/assets/mixes" in str(p) for p in mixes.values())
    for name in mixes:
        assert not any(s.path.startswith("shared:") for s in load_mix(name).sources), name
    with pytest.raises(UsageError, match="unknown calibration mix 'nope'"):
        load_mix("nope")


def test_default_mix_is_packaged_deterministic_and_full_length(micro_dense, no_shared_data):
    mix = load_mix("default")
    a = mix.build(micro_dense, samples=40, seq_len=128)
    b = mix.build(micro_dense, samples=40, seq_len=128)
    assert a.sha256 == b.sha256 and a.samples == b.samples
    s = a.summary()
    assert s["samples"] == 40 and s["tokens"] == 40 * 128  # rows are packed up to seq_len
    assert set(s["sources"]) == DEFAULT_SOURCES and set(s["licenses"]) == DEFAULT_SOURCES
    assert s["sources"]["english-prose"]["samples"] == 8 and s["licenses"]["code"].startswith("MIT")
    assert load_mix("text").build(micro_dense, samples=8, seq_len=64).sha256 != a.sha256


def test_packaged_chat_has_thinking_on_and_off_and_tool_calls(micro_dense):
    cs = load_mix("default").build(micro_dense, samples=64, seq_len=512)
    by: dict[str, list[str]] = {}
    for text, src in zip(cs.texts, cs.source_of, strict=True):
        by.setdefault(src, []).append(text)
    for t in by["math-chat-thinking"]:
        assert t.startswith("<|im_start|>user\n") and "<think>\n\n</think>" not in t
        assert "<|im_start|>assistant\n<think>\n" in t and "The answer is" in t
    for t in by["math-chat-no-thinking"]:  # the working stays in the answer, outside <think>
        assert "<think>\n\n</think>\n\n" in t and "The answer is" in t
    tools = by["tool-calls-thinking"] + by["tool-calls-no-thinking"]
    assert all("# Tools" in t and "<tool_call>\n{" in t and "<tool_response>" in t for t in tools)
    assert any("calculator" in t for t in tools) and any("run_python" in t for t in tools)
    assert any("all tests passed" in t for t in tools)  # a real run's output, recorded by the build
    assert any(ord(c) > 0x3000 for t in by["multilingual"] for c in t)  # CJK among the languages


def test_old_shared_mix_is_test_only(micro_dense, shared_data):
    cs = load_mix(TEST_MIXES / "shared-default.toml").build(micro_dense, samples=10, seq_len=64)
    assert cs.mix == "shared-default" and len(cs.samples) == 10


def test_unreadable_source_is_an_error_naming_it(micro_dense, no_shared_data, tmp_path):
    with pytest.raises(CalibrationError, match="source english-prose: shared:corpus-en.*QWEN3_QUANT_DATA"):
        load_mix(TEST_MIXES / "shared-default.toml").build(micro_dense, samples=2, seq_len=16)
    mix = parse_mix(
        {
            "name": "m",
            "samples": 2,
            "seq_len": 16,
            "source": [{"name": "gone", "kind": "text", "path": str(tmp_path / "nothing-*.txt"), "share": 1}],
        }
    )
    with pytest.raises(CalibrationError, match="source gone: no file matches .*nothing-"):
        mix.build(micro_dense)


def test_user_text_and_jsonl_files(micro_dense, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("Calibration text from a user's own file.\n" * 200)
    cs = load_mix(str(txt)).build(micro_dense, samples=3, seq_len=32)
    assert cs.summary()["sources"] == {"notes.txt": {"samples": 3, "tokens": 96}}
    assert load_mix(txt).origin == str(txt)

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"Row {i} of plain text."}) + "\n" for i in range(5)))
    assert load_mix(rows).sources[0].kind == "jsonl"
    assert len(load_mix(rows).build(micro_dense, samples=2, seq_len=16).samples) == 2

    chat = tmp_path / "chat.jsonl"
    msg = [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7", "reasoning_content": "Seven has no divisors."},
    ]
    chat.write_text(json.dumps({"messages": msg}) + "\n")
    cs = load_mix(chat).build(micro_dense, samples=1, seq_len=64)
    assert cs.texts[0].startswith("<|im_start|>user\nName a prime.<|im_end|>")
    assert "<think>\nSeven has no divisors.\n</think>\n\n7<|im_end|>" in cs.texts[0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "calibration file .*missing.txt not found"),
        ("empty.txt", "  \n", "calibration file .*empty.txt is empty"),
        ("empty.jsonl", "", "calibration file .*empty.jsonl has no rows"),
        ("bad.jsonl", '{"text": "ok"}\nnot json\n', "bad.jsonl line 2 is not JSON"),
        (
            "fields.jsonl",
            '{"text": "ok"}\n{"prompt": "x", "answer": "y"}\n',
            "row 2 has neither .*answer, prompt",
        ),
        ("msgs.jsonl", '{"messages": "hi"}\n', "row 1 has no 'messages' list"),
        ("binary.txt", b"\xff\xfe\x00bad", "cannot read .*binary.txt"),
    ],
)
def test_bad_user_files_fail_in_one_line(tmp_path, name, content, message):
    f = tmp_path / name
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises(CalibrationError, match=message) as err:
        load_mix(f)
    assert "\n" not in err.value.one_line() and err.value.hint


def test_bad_mixes():
    with pytest.raises(CalibrationError, match="lacks 'samples'"):
        parse_mix({"name": "x", "seq_len": 8, "source": []})
    with pytest.raises(CalibrationError, match="unknown kind"):
        parse_mix(
            {"name": "x", "samples": 1, "seq_len": 8, "source": [{"name": "a", "kind": "pdf", "share": 1}]}
        )
    with pytest.raises(CalibrationError, match="unknown key.*sahre"):
        parse_mix(
            {"name": "x", "samples": 1, "seq_len": 8, "source": [{"name": "a", "kind": "text", "sahre": 1}]}
        )


def test_allocate():
    assert allocate(10, [0.3, 0.2, 0.2, 0.1, 0.2]) == [3, 2, 2, 1, 2]
    assert sum(allocate(7, [1, 1, 1])) == 7


def test_rows_without_the_fields_a_source_names(micro_dense, tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text(json.dumps({"q": "2+2?", "a": "4"}) + "\n")
    qa = {"name": "qa", "kind": "jsonl-chat", "path": str(f), "share": 1}
    for extra, message in [
        (
            {"fields": {"user": "{question}", "assistant": "{answer}"}},
            "source qa: row 1 has no field 'question'",
        ),
        ({"fields": {"text": "body"}}, "source qa: row 1 has no 'body' text"),
        ({}, "source qa: row 1 has no 'messages' list"),
    ]:
        mix = parse_mix({"name": "m", "samples": 1, "seq_len": 16, "source": [{**qa, **extra}]})
        with pytest.raises(CalibrationError, match=message):
            mix.build(micro_dense)


@pytest.mark.parametrize("fmt", [["--format", "gptq"], ["--format", "gguf", "--type", "Q4_K_M"]])
def test_a_bad_calibration_file_stops_quantize_in_one_line_before_work(tmp_path, fmt):
    from click.testing import CliRunner

    from qwen3_quant.cli import main

    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["quantize", "Qwen3-Micro", *fmt, "--calib", str(bad), "-o", str(out)])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "mine.jsonl: row 1 has neither a 'text' string nor 'messages'" in lines[0]
    assert not out.exists()
