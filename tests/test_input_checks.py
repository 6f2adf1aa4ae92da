"""Bad inputs refused in one line before any heavy work: unwritable output folders, evaluation
inputs that would fail only after quantising, broken tokenizer files; and a failed validation's
hint that matches its cause (issue 16, items 7-9)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from qwen3_quant.cli import main
from qwen3_quant.errors import (
    CheckpointError,
    MissingFileError,
    NotWritableError,
    RuntimeLoadError,
    UsageError,
    ValidationFailedError,
)
from qwen3_quant.io import check_writable
from qwen3_quant.testing.fake_artifacts import make_artifact


def _one_line(result) -> str:
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    return f


@pytest.fixture
def no_model_work(monkeypatch):
    """Fail the test if quantize() gets as far as resolving (downloading, loading) the model."""

    def refuse(*a, **k):
        raise AssertionError("quantize went on to the model before checking its inputs")

    monkeypatch.setattr("qwen3_quant.quantize.resolve_model", refuse)


# --- item 7: unwritable output folders -------------------------------------------------------


def test_check_writable_accepts_a_new_folder_and_leaves_nothing(tmp_path):
    check_writable(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_refuses_a_path_under_a_file(a_file):
    with pytest.raises(NotWritableError, match="which is a file"):
        check_writable(a_file / "out")
    with pytest.raises(NotWritableError, match="it is a file"):
        check_writable(a_file)


@pytest.mark.skipif(os.access("/sys", os.W_OK) and os.geteuid() != 0, reason="needs an unwritable /sys")
def test_check_writable_refuses_a_folder_it_cannot_write():
    try:
        open("/sys/.qwen3-quant-probe", "w").close()
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    with pytest.raises(NotWritableError, match="/sys .*(permission denied|read-only|not writable)"):
        check_writable("/sys/qwen3-quant-out")


def test_quantize_to_an_unwritable_folder_is_one_line_before_work(a_file, no_model_work):
    r = CliRunner().invoke(main, ["quantize", "Qwen3-Micro", "--format", "gguf", "-o", str(a_file / "out")])
    assert r.exit_code == 1
    assert "which is a file" in _one_line(r)


def test_eval_json_out_under_a_file_is_one_line_before_work(a_file, micro_dense, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("evaluated before checking where the results go")

    monkeypatch.setattr("qwen3_quant.validate.evaluate_path", refuse)
    r = CliRunner().invoke(main, ["eval", str(micro_dense), "--json-out", str(a_file / "e.json")])
    assert r.exit_code == 1 and "--json-out folder" in _one_line(r)


def test_publish_to_a_folder_under_a_file_is_one_line(tmp_path, a_file):
    art = make_artifact(tmp_path / "art", "gguf", variants={"Q8_0": 8})
    r = CliRunner().invoke(main, ["publish", str(art), "--to", str(a_file / "pub" / "x")])
    assert r.exit_code == 1 and "is a file" in _one_line(r)
    assert a_file.read_text() == "not a folder"


def test_build_into_a_folder_under_a_file_is_one_line(a_file):
    r = CliRunner().invoke(main, ["build", "--out", str(a_file / "b")])
    assert r.exit_code == 1 and "build output folder" in _one_line(r)


# --- item 8: evaluation inputs before quantising; hints by cause ------------------------------


def test_quantize_with_a_missing_text_fails_before_quantising(tmp_path, no_model_work):
    r = CliRunner().invoke(
        main,
        ["quantize", "Qwen3-Micro", "--format", "gguf", "-o", str(tmp_path / "o"), "--text", "nope.txt"],
    )
    assert r.exit_code == 1 and "text file not found: nope.txt" in _one_line(r)
    assert not (tmp_path / "o").exists()


def test_check_eval_inputs(tmp_path):
    from qwen3_quant.eval.options import EvalOptions
    from qwen3_quant.validate import check_eval_inputs

    check_eval_inputs(EvalOptions())  # the built-in text
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(UsageError, match="is empty"):
        check_eval_inputs(EvalOptions(text=str(empty)))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(MissingFileError, match="not UTF-8"):
        check_eval_inputs(EvalOptions(text=str(latin)))
    with pytest.raises(NotWritableError):
        check_eval_inputs(EvalOptions(reference_dir=empty / "refs"))


def test_quantize_without_validation_does_not_read_the_text(tmp_path, monkeypatch):
    from qwen3_quant import quantize as q

    called = []
    monkeypatch.setattr(q, "check_eval_inputs", lambda o: called.append(o))
    monkeypatch.setattr(q, "resolve_model", lambda *a, **k: (_ for _ in ()).throw(UsageError("stop here")))
    with pytest.raises(UsageError, match="stop here"):
        q.quantize("Qwen3-Micro", "gguf", out_dir=tmp_path / "o", validate=False)
    assert called == []


@pytest.mark.parametrize(
    ("error", "gate"), [(RuntimeLoadError("bad magic"), "loads"), (MissingFileError("no text"), "evaluates")]
)
def test_a_validation_error_is_named_by_what_failed(tmp_path, monkeypatch, error, gate):
    from qwen3_quant import validate
    from qwen3_quant.artifact import Manifest

    art = make_artifact(tmp_path, "gguf", variants={"Q8_0": 8}, validation={"Q8_0": None})

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(validate, "evaluate", fail)
    (res,) = validate.validate_artifact(art)
    assert res.passed is False and [g["name"] for g in res.gates] == [gate]
    assert Manifest.read(art).variants["Q8_0"].validation.error == error.one_line()


def test_publish_hint_matches_the_cause(tmp_path):
    from qwen3_quant.publish import build_bundle

    errored = make_artifact(tmp_path / "e", "gguf", variants={"Q8_0": 8}, validation={"Q8_0": "error"})
    with pytest.raises(ValidationFailedError) as exc:
        build_bundle(errored)
    assert "more bits" not in exc.value.one_line()
    assert "validation error" in exc.value.one_line() and "validate again" in exc.value.one_line()
    failed = make_artifact(tmp_path / "f", "gguf", variants={"Q2_K": 2}, validation={"Q2_K": "fail"})
    with pytest.raises(ValidationFailedError, match="more bits"):
        build_bundle(failed)


# --- item 9: tokenizer files parsed by check -------------------------------------------------


@pytest.fixture
def micro_copy(micro_dense, tmp_path):
    d = tmp_path / "Qwen3-Micro"
    shutil.copytree(micro_dense, d)
    return d


def _check_fails(folder, match):
    from qwen3_quant.checkpoint import inspect_checkpoint

    with pytest.raises(CheckpointError, match=match):
        inspect_checkpoint(folder)
    r = CliRunner().invoke(main, ["check", str(folder)])
    assert r.exit_code == 1
    return _one_line(r)


def test_check_refuses_a_truncated_tokenizer_json(micro_copy):
    f = micro_copy / "tokenizer.json"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert "tokenizer.json is not valid JSON" in _check_fails(micro_copy, "not valid JSON")


def test_check_refuses_a_tokenizer_json_without_vocab_or_merges(micro_copy):
    f = micro_copy / "tokenizer.json"
    doc = json.loads(f.read_text())
    doc["model"]["merges"] = []
    f.write_text(json.dumps(doc))
    _check_fails(micro_copy, "has no merges")
    del doc["model"]["vocab"]
    f.write_text(json.dumps(doc))
    _check_fails(micro_copy, "has no vocab")
    f.write_text(json.dumps({"version": "1.0"}))
    _check_fails(micro_copy, "has no tokenizer model")


def test_check_refuses_a_broken_tokenizer_config(micro_copy):
    (micro_copy / "tokenizer_config.json").write_text('{"model_max_length": 40960,')
    _check_fails(micro_copy, "tokenizer_config.json is not valid JSON")


def test_check_json_reports_a_failure_as_json(micro_copy):
    (micro_copy / "tokenizer.json").write_text("{")
    r = CliRunner().invoke(main, ["check", str(micro_copy), "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and "tokenizer.json is not valid JSON" in doc["error"]
    assert doc["exit_code"] == 1 and doc["hint"]


def test_build_with_an_unreadable_eval_text_is_one_line_before_any_cell(tmp_path):
    f = tmp_path / "build.toml"
    f.write_text(
        f'[build]\nname = "t"\nmodels = ["Qwen3-Micro"]\nout = "{tmp_path / "out"}"\n'
        '[eval]\ntext = "no-such-text.txt"\n[[format]]\nname = "gguf"\ntypes = ["Q8_0"]\n'
    )
    r = CliRunner().invoke(main, ["build", str(f)])
    assert r.exit_code == 1 and "text file not found: no-such-text.txt" in _one_line(r)
    assert not (tmp_path / "out" / "build").exists()


def test_eval_of_a_model_with_a_broken_tokenizer_is_one_line(micro_copy, tmp_path):
    (micro_copy / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {"a": 0}')
    r = CliRunner().invoke(main, ["eval", str(micro_copy), "--json-out", str(tmp_path / "e.json")])
    assert r.exit_code == 1 and "tokenizer.json is not valid JSON" in _one_line(r)
