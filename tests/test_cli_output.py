"""What the CLI prints: progress off a terminal, tables that fit, JSON on stdout, and the small
things a new user trips on (issue 16, items 10-12)."""

from __future__ import annotations

import io
import json
import re

import pytest
from click.testing import CliRunner

from qwen3_quant.cli import main
from qwen3_quant.progress import PlainProgress, elapsed_text
from qwen3_quant.testing.fake_artifacts import make_artifact

# --- item 10: progress ------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_lines_are_stamped_named_and_throttled():
    out, clock = io.StringIO(), _Clock()
    p = PlainProgress(out, label="Qwen3-8B GGUF", interval=30, clock=clock)
    p("converting Qwen3-8B to Q4_K_M", 1, 400)
    for i in range(2, 400):  # a fast stage: no line per step
        clock.now += 0.1
        p("converting Qwen3-8B to Q4_K_M", i, 400)
    p("converting Qwen3-8B to Q4_K_M", 400, 400)
    clock.now += 3600
    p("validate Q4_K_M: scoring windows", 1, 4)
    p("validate Q4_K_M: scoring windows", 1, 4)  # nothing new: no line
    p("validate Q4_K_M: scoring windows", 2, 4)  # a small stage: every step
    lines = out.getvalue().splitlines()
    assert lines[0] == "[0:00] Qwen3-8B GGUF: converting Qwen3-8B to Q4_K_M 1/400 (0%)"
    assert lines[-1] == "[1:00:39] Qwen3-8B GGUF: validate Q4_K_M: scoring windows 2/4 (50%)"
    assert 4 <= len(lines) <= 6 and any("400/400 (100%)" in ln for ln in lines)


def test_elapsed_text():
    assert [elapsed_text(s) for s in (7, 725, 3723)] == ["0:07", "12:05", "1:02:03"]


def test_quantize_prints_plain_progress_off_a_terminal_and_names_the_artifact(tmp_path, micro_dense):
    out = tmp_path / "out"  # not the artifact's name: the manifest and card must not take it
    r = CliRunner().invoke(
        main,
        ["quantize", str(micro_dense), "--format", "gguf", "--type", "Q8_0", "-o", str(out), "--no-validate"],
    )
    assert r.exit_code == 0, r.output
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert progress and all(re.match(r"^\[\d+:\d\d\] Qwen3-Micro GGUF: ", ln) for ln in progress)
    assert any("converting Qwen3-Micro to" in ln for ln in progress)
    assert json.loads((out / "qwen3_quant.json").read_text())["name"] == "Qwen3-Micro-GGUF"


def test_validation_progress_names_the_variant(tmp_path, monkeypatch):
    from qwen3_quant import validate
    from qwen3_quant.errors import RuntimeLoadError

    art = make_artifact(tmp_path, "gguf", variants={"Q8_0": 8}, validation={"Q8_0": None})
    seen = []

    def evaluate(target, *, options, gates, progress):
        progress("scoring windows", 1, 2)
        raise RuntimeLoadError("stop")

    monkeypatch.setattr(validate, "evaluate", evaluate)
    validate.validate_artifact(art, progress=lambda *a: seen.append(a))
    assert seen == [("validate Q8_0: scoring windows", 1, 2)]


def test_build_worker_reports_progress_named_after_its_cell(tmp_path, monkeypatch, capsys):
    from qwen3_quant.build import worker
    from qwen3_quant.errors import UsageError

    def quantize(model, fmt, *, progress, **kw):
        progress("converting", 1, 1)
        raise UsageError("stop after reporting")

    monkeypatch.setattr("qwen3_quant.quantize.quantize", quantize)
    assert worker.main(["--out", str(tmp_path / "b"), "--cell", "Qwen3-Micro/gguf/Q8_0"]) == 1
    assert "[0:00] Qwen3-Micro/gguf/Q8_0: converting 1/1" in capsys.readouterr().err


# --- item 11: tables and JSON -----------------------------------------------------------------


def _models_table():
    from rich.table import Table

    t = Table(title="Qwen3 models")
    for c in ("model", "type", "layers", "hidden", "heads/kv", "head_dim", "ffn", "experts", "params"):
        t.add_column(c, no_wrap=True)
    t.add_row("Qwen3-235B-A22B", "MoE", "94", "4096", "64/4", "128", "12288", "128x1536 top8", "235B")
    t.add_row("Qwen3-0.6B", "dense tied", "28", "1024", "16/8", "128", "3072", "-", "596M")
    return t


@pytest.mark.parametrize("terminal", [True, False])
def test_print_table_never_cuts_cells(terminal):
    from rich.console import Console

    from qwen3_quant.cli.console import print_table

    buf = io.StringIO()
    con = Console(file=buf, width=60, force_terminal=terminal, color_system=None, highlight=False)
    print_table(_models_table(), con)
    text = buf.getvalue()
    assert "…" not in text
    for word in ("Qwen3-235B-A22B", "dense tied", "128x1536 top8", "heads/kv"):
        assert word in text
    widest = max(len(ln) for ln in text.splitlines())
    assert widest <= 60 if terminal else widest > 60  # fits the terminal; whole in a log


def test_models_is_whole_when_piped():
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0 and "…" not in r.stdout and "Qwen3-235B-A22B" in r.stdout


def test_calib_list_json():
    r = CliRunner().invoke(main, ["calib", "list", "--json"])
    assert r.exit_code == 0
    mixes = {m["name"]: m for m in json.loads(r.stdout)}
    assert "default" in mixes and mixes["default"]["samples"] > 0


def test_quantize_json_on_failure_and_success(tmp_path, micro_dense):
    r = CliRunner().invoke(
        main, ["quantize", str(micro_dense), "--format", "gguf", "--type", "Q9_X", "--json"]
    )
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and "Q9_X" in doc["error"] and doc["exit_code"] == 2
    r = CliRunner().invoke(
        main,
        [
            "quantize",
            str(micro_dense),
            "--format",
            "gguf",
            "--type",
            "Q8_0",
            "-o",
            str(tmp_path / "a"),
            "--no-validate",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["variants"] == ["Q8_0"] and doc["artifact_dir"] == str(tmp_path / "a")


def test_publish_json(tmp_path):
    art = make_artifact(tmp_path / "art", "gguf", variants={"Q8_0": 8})
    r = CliRunner().invoke(main, ["publish", str(art), "--to", str(tmp_path / "pub"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["target"] == str(tmp_path / "pub") and doc["card"].startswith("---")
    failed = make_artifact(tmp_path / "bad", "gguf", variants={"Q2_K": 2}, validation={"Q2_K": "fail"})
    r = CliRunner().invoke(main, ["publish", str(failed), "--to", str(tmp_path / "pub2"), "--json"])
    assert r.exit_code == 3
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and "refusing to publish" in doc["error"]


# --- item 12: the small things ----------------------------------------------------------------


def test_empty_type_is_an_error_and_errors_start_on_the_first_line(micro_dense):
    r = CliRunner().invoke(main, ["quantize", str(micro_dense), "--format", "gguf", "--type", ""])
    assert r.exit_code == 2
    assert r.output.startswith("Error: --type is empty")


@pytest.mark.parametrize("env_offline", [True, False])
def test_offline_hint_names_hf_hub_offline_only_when_it_is_set(monkeypatch, env_offline):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from qwen3_quant.errors import DownloadError
    from qwen3_quant.sources import download_snapshot

    def not_cached(*a, **k):
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_cached)
    monkeypatch.setattr("qwen3_quant.sources._check_space_for", lambda *a: None)
    if env_offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DownloadError) as exc:
        download_snapshot("Qwen/Qwen3-8B", revision=None, cache_dir=None)
    assert ("HF_HUB_OFFLINE" in exc.value.one_line()) is env_offline
    if not env_offline:
        assert "check the network" in exc.value.one_line()


def test_card_prints_no_python_none(tmp_path):
    from qwen3_quant.artifact import Manifest, ValidationRecord, record_validation
    from qwen3_quant.publish import build_bundle

    art = make_artifact(tmp_path, "gguf", variants={"Q8_0": 8})
    rec = Manifest.read(art).variants["Q8_0"].validation
    result = dict(rec.result, prompt_tokens=None, decode_tokens=None, hardware=None)  # run with --no-speed
    record_validation(art, "Q8_0", ValidationRecord(True, rec.gates, result, files_sha256=rec.files_sha256))
    card = build_bundle(art).card
    assert "None" not in card
    assert "Measured with llama.cpp; text `builtin:pydoc`, 4088 tokens scored in windows of 512." in card


def test_gguf_commit_message_names_shared_files_by_what_they_are():
    from qwen3_quant.publish.bundle import PublishFile
    from qwen3_quant.publish.hub import commit_message

    imatrix = PublishFile("Qwen3-8B.imatrix.gguf", 10, "0" * 64)
    q4 = PublishFile("Qwen3-8B-Q4_K_M.gguf", 10, "0" * 64, variant="Q4_K_M")
    msg = commit_message("Qwen3-8B-GGUF", [q4, imatrix], 1, 2)
    assert msg == "Upload Qwen3-8B-GGUF (1/2): Q4_K_M, Qwen3-8B.imatrix.gguf"
    tok = PublishFile("tokenizer.json", 10, "0" * 64)
    assert commit_message("X", [tok], 1, 1).endswith(": config and tokenizer")


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("quantize", ("--type", "--bits", "--group-size", "--ctx", "--max-tokens")),
        ("build", ("--jobs",)),
        ("eval", ("--ctx", "--prompt-tokens", "--decode-tokens", "--repeats")),
    ],
)
def test_help_shows_defaults(command, flags):
    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0
    options = re.split(r"\n  (?=-)", r.output)  # one entry per option, with its wrapped help
    for flag in flags:
        text = " ".join(next(o for o in options if o.startswith(flag + " ")).split())
        assert re.search(r"default", text, re.IGNORECASE), text


def test_json_on_stdout_has_no_nan(capsys):
    from qwen3_quant.cli.console import print_json

    print_json({"ok": False, "results": [{"perplexity": float("nan"), "kld": float("inf"), "n": 3}]})
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    assert json.loads(out)["results"] == [{"perplexity": None, "kld": None, "n": 3}]
