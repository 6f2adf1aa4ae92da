"""The resumable build: spec parsing, planning, the whole micro matrix, kill and resume, CI matrix, Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from qwen3_quant.artifact import Manifest, verify_files
from qwen3_quant.build import build, collect, github_matrix, load_build, plan
from qwen3_quant.build.spec import parse_build, select
from qwen3_quant.build.state import inputs_hash, load_state
from qwen3_quant.errors import UsageError
from qwen3_quant.io import free_bytes
from qwen3_quant.publish import publish

SMALL_EVAL = """
[eval]
text = "builtin:pydoc"
ctx = 128
max_tokens = 512
prompt_tokens = 32
decode_tokens = 8
repeats = 1
"""


def write_build(
    tmp_path: Path, formats: str, models=("Qwen3-Micro", "Qwen3-Micro-MoE"), publish=True, extra: str = ""
) -> Path:
    f = tmp_path / "build.toml"
    f.write_text(
        textwrap.dedent(f"""
        [build]
        name = "test"
        models = {json.dumps(list(models))}
        out = "{tmp_path / "out"}"
        jobs = 1
        [calib]
        mix = "builtin"
        samples = 8
        {extra}
        """)
        + SMALL_EVAL
        + formats
        + (f'\n[publish]\nto = "{tmp_path / "pub"}"\n' if publish else "")
    )
    return f


GGUF_ONLY = '\n[[format]]\nname = "gguf"\ntypes = ["Q8_0", "Q4_K_M", "Q6_K"]\n'
ALL_FORMATS = """
[[format]]
name = "gguf"
types = ["Q8_0", "Q4_K_M"]
[[format]]
name = "gptq"
bits = [4]
[[format]]
name = "awq"
bits = [4]
[[format]]
name = "onnx"
precision = ["int4"]
"""


def test_cells_and_errors(tmp_path):
    spec = load_build(write_build(tmp_path, ALL_FORMATS))
    ids = [c.id for c in spec.cells()]
    assert ids[:5] == [
        "Qwen3-Micro/gguf/Q8_0",
        "Qwen3-Micro/gguf/Q4_K_M",
        "Qwen3-Micro/gptq/4",
        "Qwen3-Micro/awq/4",
        "Qwen3-Micro/onnx/int4",
    ]
    assert len(ids) == 10
    gptq = select(spec.cells(), ["Qwen3-Micro/gptq/4"])[0]
    assert gptq.option_dict() == {"bits": 4, "calib": "builtin", "calib_samples": 8}
    # the build's calibration goes only to the cells that calibrate
    by_id = {c.id: c.option_dict() for c in spec.cells()}
    assert by_id["Qwen3-Micro/gguf/Q4_K_M"]["calib"] == "builtin"
    assert "calib" not in by_id["Qwen3-Micro/gguf/Q8_0"] and "calib" not in by_id["Qwen3-Micro/onnx/int4"]
    with pytest.raises(UsageError, match="no cell Qwen3-Micro/gguf/Q2_K"):
        select(spec.cells(), ["Qwen3-Micro/gguf/Q2_K"])
    with pytest.raises(UsageError, match="unknown format 'exl2'"):
        parse_build({"build": {"models": ["Qwen3-8B"]}, "format": [{"name": "exl2"}]})
    with pytest.raises(UsageError, match="models is empty"):
        parse_build({"build": {}, "format": [{"name": "gguf"}]})


def test_inputs_hash_follows_inputs(tmp_path):
    a = load_build(write_build(tmp_path, GGUF_ONLY))
    cell = a.cells()[0]
    h = inputs_hash(a, cell)
    assert h == inputs_hash(a, cell)
    b = load_build(write_build(tmp_path, GGUF_ONLY, extra="[gates]\nppl = 3"))
    assert inputs_hash(b, b.cells()[0]) != h


def test_plan_skips_what_the_machine_cannot_hold(tmp_path):
    f = tmp_path / "prod.toml"
    f.write_text(
        '[build]\nmodels = ["Qwen3-0.6B", "Qwen3-235B-A22B"]\nout = "o"\n'
        '[[format]]\nname = "gptq"\nbits = [4]\n[[format]]\nname = "gguf"\ntypes = ["Q4_K_M"]\n'
    )
    rows = {r.cell.id: r for r in plan(load_build(f))}
    assert (
        rows["Qwen3-235B-A22B/gptq/4"].status == "skip"
        and "GB of memory" in rows["Qwen3-235B-A22B/gptq/4"].reason
    )
    assert rows["Qwen3-0.6B/gguf/Q4_K_M"].status == "todo"
    assert 0.35e9 < rows["Qwen3-0.6B/gguf/Q4_K_M"].artifact_bytes < 0.45e9
    # the disk is checked too: the 235B bf16 download alone is 470 GB
    big = rows["Qwen3-235B-A22B/gguf/Q4_K_M"]
    assert big.needs.disk_bytes > 470e9
    if big.peak_bytes < psutil.virtual_memory().total and big.needs.disk_bytes > free_bytes(Path("o")):
        assert big.status == "skip" and "GB of disk" in big.reason


def test_cli_plan_and_matrix(tmp_path):
    from qwen3_quant.cli import main

    f = write_build(tmp_path, GGUF_ONLY)
    r = CliRunner().invoke(main, ["build", str(f), "--plan"])
    assert r.exit_code == 0 and "Qwen3-Micro-MoE/gguf/Q6_K" in r.output and "todo" in r.output
    r = CliRunner().invoke(main, ["build", str(f), "--emit", "github-matrix"])
    assert r.exit_code == 0 and len(json.loads(r.output)["include"]) == 6
    r = CliRunner().invoke(main, ["build", str(tmp_path / "none.toml")])
    assert r.exit_code == 1 and "build file not found" in r.output


@pytest.mark.slow
def test_whole_micro_matrix_then_nothing_to_redo(tmp_path, shared_data):
    f = write_build(tmp_path, ALL_FORMATS)
    events: list[tuple[str, str]] = []
    out = build(f, on_event=lambda c, s: events.append((c, s)))
    assert len(out.entries) == 10 and not out.skipped
    bad = {
        c: (e.get("status"), e.get("error"), [r.get("gates") for r in e.get("results", [])])
        for c, e in out.entries.items()
        if e["status"] != "passed"
    }
    assert not bad, bad
    assert out.exit_code == 0
    rep = out.report_dir
    for name in (
        "report.md",
        "report.html",
        "report.json",
        "size_vs_kld.png",
        "tokens_per_second.png",
    ):
        assert (rep / name).is_file(), name
    rows = json.loads((rep / "report.json").read_text())["rows"]
    assert all(r["perplexity"] > 0 and r["bytes"] > 0 and r["decode_tps"] > 0 for r in rows)
    published = sorted(p.name for p in (tmp_path / "pub").iterdir())
    assert published == [
        "Qwen3-Micro-AWQ",
        "Qwen3-Micro-GGUF",
        "Qwen3-Micro-GPTQ-Int4",
        "Qwen3-Micro-MoE-AWQ",
        "Qwen3-Micro-MoE-GGUF",
        "Qwen3-Micro-MoE-GPTQ-Int4",
        "Qwen3-Micro-MoE-ONNX-int4",
        "Qwen3-Micro-ONNX-int4",
    ]
    # a second run finds everything up to date and starts nothing
    events.clear()
    again = build(f, on_event=lambda c, s: events.append((c, s)))
    assert events == [] and again.exit_code == 0
    assert all(r.status == "done" for r in plan(load_build(f)))


@pytest.mark.slow
def test_kill_in_the_middle_and_resume(tmp_path):
    f = write_build(tmp_path, GGUF_ONLY, publish=False)
    state_file = tmp_path / "out" / "build" / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwen3_quant.cli", "build", str(f)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    done: set[str] = set()
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file():
            cells = json.loads(state_file.read_text())["cells"]
            done = {c for c, e in cells.items() if e.get("status") == "passed"}
            if len(done) >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(done) < 6
    events: list[tuple[str, str]] = []
    out = build(f, on_event=lambda c, s: events.append((c, s)))
    started = {c for c, s in events if s == "start"}
    assert started.isdisjoint(done), "cells finished before the kill are not redone"
    assert started | done == {c.id for c in load_build(f).cells()}
    assert out.exit_code == 0
    for folder in (tmp_path / "out" / "artifacts").iterdir():
        assert not folder.name.endswith(".partial")


@pytest.mark.slow
def test_ci_matrix_cells_then_collect_and_publish_every_variant(tmp_path):
    """The example workflow, simulated: every matrix cell runs as its own job into its own folder,
    the collect step merges them variant by variant, and every variant is published."""
    f = write_build(
        tmp_path, '\n[[format]]\nname = "gguf"\ntypes = ["Q8_0", "Q4_K_M"]\n', models=("Qwen3-Micro",)
    )
    matrix = github_matrix(f)["include"]
    assert {c["runs_on"] for c in matrix} == {"ubuntu-latest"}
    jobs = []
    for c in matrix:  # each job as the workflow runs it: its own process and --out folder
        o = tmp_path / "cells" / f"cell-{c['slug']}"
        cmd = [sys.executable, "-m", "qwen3_quant.cli", "build", str(f), "--out", str(o), "--cell", c["cell"]]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=600)
        assert load_state(o / "build")["cells"][c["cell"]]["status"] == "passed"
        assert not (o / "report").exists()
        jobs.append(o)
    merged = tmp_path / "merged"
    res = collect(f, out=merged, states=jobs)
    assert {c: e["status"] for c, e in res.entries.items()} == {
        "Qwen3-Micro/gguf/Q8_0": "passed",
        "Qwen3-Micro/gguf/Q4_K_M": "passed",
    }
    assert res.exit_code == 0
    for e in res.entries.values():  # the state points at the merged folder, not at a job's
        assert Path(e["artifact_dir"]).parent == merged / "artifacts"
    art = merged / "artifacts" / "Qwen3-Micro-GGUF"
    m = Manifest.read(art)
    assert set(m.variants) == {"Q8_0", "Q4_K_M"} and verify_files(art, m) == []
    assert [f for f in m.shared_files if f.endswith(".imatrix.gguf")]  # Q4_K_M's job made it
    # the merged folder owns its files: the jobs' folders can go
    for o in jobs:
        shutil.rmtree(o)
    assert verify_files(art, Manifest.read(art)) == []
    pub = tmp_path / "pub" / "Qwen3-Micro-GGUF"
    assert res.published == [str(pub)]
    assert set(Manifest.read(pub).variants) == {"Q8_0", "Q4_K_M"}
    for v in ("Q8_0", "Q4_K_M"):
        one = publish(art, tmp_path / "one" / v, variants=[v])
        assert one.variants == [v]
    assert (res.report_dir / "report.md").read_text().count("Qwen3-Micro/gguf/") == 2
    # collecting again (nothing new) keeps what was merged
    again = collect(f, out=merged, states=[], publish=False)
    assert all(e["status"] == "passed" for e in again.entries.values())


@pytest.mark.slow
def test_ray_executor_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    f = write_build(tmp_path, '\n[[format]]\nname = "gguf"\ntypes = ["Q8_0"]\n', publish=False)
    out = build(f, executor="ray")
    assert {c: e["status"] for c, e in out.entries.items()} == {
        "Qwen3-Micro/gguf/Q8_0": "passed",
        "Qwen3-Micro-MoE/gguf/Q8_0": "passed",
    }
