"""A whole GGUF run: CLI, artifact folder and manifest, validation, reruns that keep what is done,
interrupted runs, a full disk, and bad input."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from click.testing import CliRunner  # noqa: E402

from qwen3_quant.artifact import load_manifest, verify_files  # noqa: E402
from qwen3_quant.cli import main  # noqa: E402
from qwen3_quant.errors import ArtifactExistsError, CheckpointError, DiskFullError, UsageError  # noqa: E402
from qwen3_quant.formats.gguf.gguf_io import read_header  # noqa: E402
from qwen3_quant.quantize import quantize  # noqa: E402

FAST = dict(validate=False)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.gguf")} | {
        p.name: p.stat().st_mtime_ns for p in (folder / ".work").glob("*.gguf")
    }


def _finals(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.gguf"))


@pytest.mark.slow
def test_cli_quantize_validate_and_rerun(tmp_path, cache_dir):
    out = tmp_path / "Qwen3-Micro-GGUF"
    args = ["quantize", "Qwen3-Micro", "--format", "gguf", "--type", "q8_0,Q4_K_M", "-o", str(out)]
    args += ["--calib", "builtin", "--calib-samples", "4", "--max-tokens", "600", "--ctx", "128"]
    res = CliRunner().invoke(main, [*args, "--json-out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert _finals(out) == ["Qwen3-Micro-Q4_K_M.gguf", "Qwen3-Micro-Q8_0.gguf", "Qwen3-Micro.imatrix.gguf"]
    assert (out / ".work" / "Qwen3-Micro-BF16.gguf").is_file()  # the shared conversion, kept
    m = load_manifest(out)
    assert m["format"] == "gguf" and list(m["variants"]) == ["Q8_0", "Q4_K_M"]
    assert not verify_files(out, m)
    q4, q8 = m["variants"]["Q4_K_M"], m["variants"]["Q8_0"]
    assert q4["recipe"]["bits"] == 4 and q4["recipe"]["imatrix"] is True
    assert (
        q4["recipe"]["calibration"]["mix"] == "builtin" and len(q4["recipe"]["calibration"]["sha256"]) == 64
    )
    assert q4["recipe"]["base"]["type"] == "BF16" and "Q6_K" in q4["recipe"]["tensor_types"]
    assert q8["recipe"]["bits"] == 8 and q8["recipe"]["imatrix"] is False
    assert m["files"]["Qwen3-Micro.imatrix.gguf"]["sha256"]
    assert json.loads((out / "params").read_text())["temperature"] == 0.6 and m["files"]["params"]["sha256"]
    for v in (q4, q8):
        assert v["validation"]["passed"] is True, v["validation"]
        assert v["validation"]["result"]["runtime"] == "llama.cpp"
        assert v["validation"]["result"]["decode_tps"] > 0
    kv = read_header(out / "Qwen3-Micro-Q4_K_M.gguf").kv
    assert kv["general.file_type"] == 15 and kv["quantize.imatrix.file"] == "Qwen3-Micro.imatrix.gguf"
    assert json.loads((tmp_path / "r.json").read_text())["variants"] == ["Q8_0", "Q4_K_M"]

    # more types: nothing is converted again, the finished types and the imatrix are kept
    before = _mtimes(out)
    res = CliRunner().invoke(main, [*args[:5], "Q8_0,Q4_K_M,Q6_K,BF16", *args[6:], "--no-validate"])
    assert res.exit_code == 0, res.output
    after = _mtimes(out)
    assert {k: after[k] for k in before} == before
    assert "Qwen3-Micro-Q6_K.gguf" in after and "Qwen3-Micro-BF16.gguf" in after
    m = load_manifest(out)
    assert list(m["variants"]) == ["Q8_0", "Q4_K_M", "Q6_K", "BF16"]
    assert m["variants"]["Q4_K_M"]["validation"]["passed"] is True  # kept with its validation
    # the BF16 variant is the shared conversion itself
    assert (out / "Qwen3-Micro-BF16.gguf").stat().st_ino == (
        out / ".work" / "Qwen3-Micro-BF16.gguf"
    ).stat().st_ino

    # other settings for an existing type: refused without --overwrite, rebuilt with it
    res = CliRunner().invoke(main, [*args[:5], "Q4_K_M", "-o", str(out), "--no-imatrix", "--no-validate"])
    assert res.exit_code == ArtifactExistsError.exit_code and "--overwrite" in res.output
    res = CliRunner().invoke(
        main, [*args[:5], "Q4_K_M", "-o", str(out), "--no-imatrix", "--no-validate", "--overwrite"]
    )
    assert res.exit_code == 0, res.output
    rec = load_manifest(out)["variants"]["Q4_K_M"]["recipe"]
    assert (
        rec["imatrix"] is False
        and "quantize.imatrix.file" not in read_header(out / "Qwen3-Micro-Q4_K_M.gguf").kv
    )


def test_unknown_type_and_bad_input_fail_before_any_work(tmp_path, micro_dense):
    res = CliRunner().invoke(main, ["quantize", "Qwen3-Micro", "--format", "gguf", "--type", "Q4_K_Z"])
    assert res.exit_code == 2 and "unknown GGUF type 'Q4_K_Z'" in res.output and "Q4_K_M" in res.output
    res = CliRunner().invoke(main, ["quantize", "Qwen3-Micro", "--format", "gguf", "--bits", "4"])
    assert res.exit_code == 2 and "--bits does not apply to --format gguf" in res.output

    no_tok = shutil.copytree(micro_dense, tmp_path / "no-tokenizer")
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer"):
        quantize(str(no_tok), "gguf", out_dir=tmp_path / "o1", types=["Q8_0"], validate=False)
    llama = shutil.copytree(micro_dense, tmp_path / "llama")
    cfg = json.loads((llama / "config.json").read_text())
    (llama / "config.json").write_text(json.dumps(cfg | {"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="not Qwen3"):
        quantize(str(llama), "gguf", out_dir=tmp_path / "o2", types=["Q8_0"], validate=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_existing_foreign_file_is_not_overwritten(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "Qwen3-Micro-Q8_0.gguf").write_bytes(b"someone else's file")
    with pytest.raises(ArtifactExistsError, match="not recorded"):
        quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0"], **FAST)
    assert (out / "Qwen3-Micro-Q8_0.gguf").read_bytes() == b"someone else's file"


# --- a full disk -------------------------------------------------------------------------------


def test_full_disk_before_work(tmp_path, monkeypatch):
    import qwen3_quant.io as qio

    real = shutil.disk_usage
    monkeypatch.setattr(qio.shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    with pytest.raises(DiskFullError, match="not enough disk space"):
        quantize("Qwen3-Micro", "gguf", out_dir=tmp_path / "o", types=["Q8_0"], **FAST)
    assert not list((tmp_path).rglob("*.gguf"))


def test_a_kept_artifact_needs_no_free_space(tmp_path, monkeypatch):
    import qwen3_quant.io as qio

    out = tmp_path / "o"
    quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0"], **FAST)
    real = shutil.disk_usage
    monkeypatch.setattr(qio.shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    res = quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0"], **FAST)  # nothing to write
    assert res.variants == ["Q8_0"]
    with pytest.raises(DiskFullError, match="not enough disk space"):  # a type it would add
        quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0", "Q6_K"], **FAST)


def test_disk_filling_up_mid_write(tmp_path, monkeypatch):
    from qwen3_quant.formats.gguf import gguf_io

    real_write = gguf_io.GGUFStream.write
    calls = {"n": 0}

    def failing_write(self, data):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(gguf_io.GGUFStream, "write", failing_write)
    out = tmp_path / "o"
    with pytest.raises(DiskFullError, match="disk filled up"):
        quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0"], **FAST)
    assert _finals(out) == [] and not list((out / ".work").glob("*.gguf"))
    assert not list((out / ".work").glob("tmp-*"))
    monkeypatch.setattr(gguf_io.GGUFStream, "write", real_write)
    assert quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0"], **FAST).variants == ["Q8_0"]
    assert not verify_files(out, load_manifest(out))


# --- interrupted runs --------------------------------------------------------------------------

_RUN = textwrap.dedent(
    """
    import sys
    from qwen3_quant.quantize import quantize
    quantize(sys.argv[1], "gguf", out_dir=sys.argv[2], types=sys.argv[3].split(","), validate=False)
    """
)


def _run_and_kill(model: str, out: Path, types: str, when) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, model, str(out), types],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not when(out):
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the run never reached the point to interrupt")
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()


def _no_partial_final_files(out: Path) -> None:
    """Every .gguf under a final name is a recorded, intact variant."""
    m = load_manifest(out) if (out / "qwen3_quant.json").is_file() else {"files": {}, "variants": {}}
    recorded = {f for v in m["variants"].values() for f in v["files"]}
    for name in _finals(out):
        assert name in recorded, name
    assert not verify_files(out, m, sorted(recorded))


@pytest.mark.slow
def test_killed_run_leaves_no_partial_file_and_resumes(tmp_path, micro_moe):
    out = tmp_path / "o"
    types = "Q8_0,Q6_K,Q5_K_M,Q5_K_S"  # no importance matrix: llama.cpp only

    def converting(o: Path) -> bool:
        part = o / ".work" / "tmp-base" / "Qwen3-Micro-MoE-BF16.gguf"
        return part.is_file() and part.stat().st_size > 1_000_000

    _run_and_kill(str(micro_moe), out, types, converting)
    assert _finals(out) == [] and not (out / ".work" / "Qwen3-Micro-MoE-BF16.gguf").exists()

    def second_type(o: Path) -> bool:
        return (o / ".work" / "tmp-Q6_K").is_dir()

    _run_and_kill(str(micro_moe), out, types, second_type)
    _no_partial_final_files(out)
    done = _mtimes(out)
    assert "Qwen3-Micro-MoE-Q8_0.gguf" in done and "Qwen3-Micro-MoE-BF16.gguf" in done

    res = quantize(str(micro_moe), "gguf", out_dir=out, types=types.split(","), validate=False)
    assert res.variants == types.split(",")
    _no_partial_final_files(out)
    assert list(load_manifest(out)["variants"]) == types.split(",")
    after = _mtimes(out)
    # the conversion and the finished type were kept, not redone
    assert after["Qwen3-Micro-MoE-Q8_0.gguf"] == done["Qwen3-Micro-MoE-Q8_0.gguf"]
    assert after["Qwen3-Micro-MoE-BF16.gguf"] == done["Qwen3-Micro-MoE-BF16.gguf"]
    assert not list((out / ".work").glob("tmp-*"))


def test_half_published_variant_is_finished_on_rerun(tmp_path, monkeypatch):
    """Killed between moving a variant into place and recording it: the rerun records it."""
    from qwen3_quant.formats.gguf import build

    out = tmp_path / "o"

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build.GGUFBuild, "_record", crash)
    with pytest.raises(KeyboardInterrupt):
        quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0"], **FAST)
    assert (out / "Qwen3-Micro-Q8_0.gguf").is_file() and (out / ".work" / "publish-Q8_0.json").is_file()
    monkeypatch.undo()
    before = _mtimes(out)["Qwen3-Micro-Q8_0.gguf"]
    quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0"], **FAST)
    assert _mtimes(out)["Qwen3-Micro-Q8_0.gguf"] == before
    assert not verify_files(out, load_manifest(out)) and "Q8_0" in load_manifest(out)["variants"]


def test_concurrent_runs_on_one_folder_are_refused(tmp_path):
    import fcntl

    out = tmp_path / "o"
    (out / ".work").mkdir(parents=True)
    with open(out / ".work" / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match="another qwen3-quant run"):
            quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0"], **FAST)


@pytest.mark.slow
def test_split_variants(tmp_path):
    """A type over --max-shard-size is published as llama.cpp splits, recorded and loadable."""
    out = tmp_path / "o"
    quantize("Qwen3-Micro", "gguf", out_dir=out, types=["Q8_0", "BF16"], max_shard_size="2M", validate=False)
    m = load_manifest(out)
    for t in ("Q8_0", "BF16"):
        files = m["variants"][t]["files"]
        assert len(files) > 2 and files[0].endswith(f"-00001-of-{len(files):05d}.gguf")
        assert m["variants"][t]["recipe"]["files"] == len(files)
    from qwen3_quant.formats.gguf.runner import LlamaCppRunner

    with LlamaCppRunner(out / m["variants"]["Q8_0"]["files"][0], ctx=32, threads=1) as r:
        assert r.logits(list(range(100, 110))).shape == (10, 8192)
