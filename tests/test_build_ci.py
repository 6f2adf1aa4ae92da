"""Builds as CI matrices: each cell's needs and runner, the matrix holding every cell, merging the
jobs' outputs variant by variant, and the example GitHub workflow's structure."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qwen3_quant.artifact import Manifest, verify_files
from qwen3_quant.build import github_matrix, load_build, plan
from qwen3_quant.build.merge import merge_variants
from qwen3_quant.build.resources import GB, CellNeeds, Runner, parse_size, route
from qwen3_quant.cli import main
from qwen3_quant.errors import MergeConflictError, UsageError
from qwen3_quant.testing.fake_artifacts import make_artifact

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "github" / "quantize-matrix.yml"
PRODUCTION = ROOT / "examples" / "build-production.toml"

RUNNERS = """
[runners.ubuntu-latest]
ram = "16GB"
disk = "14GB"
hours = 6
[runners.big]
ram = "1TB"
disk = "2TB"
hours = 200
"""


def _build(tmp_path: Path, models: list[str], runners: str = "") -> Path:
    f = tmp_path / "b.toml"
    f.write_text(
        textwrap.dedent(f"""
        [build]
        models = {json.dumps(models)}
        out = "{tmp_path / "out"}"
        [[format]]
        name = "gguf"
        types = ["Q4_K_M", "BF16"]
        [[format]]
        name = "gptq"
        bits = [4]
        """)
        + runners
    )
    return f


def test_sizes_and_routing():
    assert parse_size("16GB", where="f", field="ram") == 16 * GB
    assert parse_size("2TB", where="f", field="ram") == 2000 * GB
    assert parse_size("1GiB", where="f", field="ram") == 1 << 30
    assert parse_size(8, where="f", field="ram") == 8 * GB
    small, gpu = Runner("small", 16 * GB, 14 * GB), Runner("gpu", 256 * GB, 1000 * GB, 80 * GB, 72)
    assert route(CellNeeds(4 * GB, 10 * GB, 0, 1), (gpu, small)) is small  # the smallest that fits
    assert route(CellNeeds(4 * GB, 20 * GB, 0, 1), (gpu, small)) is gpu  # disk decides
    assert route(CellNeeds(4 * GB, 10 * GB, 40 * GB, 1), (small, gpu)) is gpu  # a GPU need
    assert route(CellNeeds(4 * GB, 10 * GB, 0, 100), (small, gpu)) is None  # longer than any job may run


def test_matrix_holds_every_cell_with_needs_and_runner(tmp_path):
    f = _build(tmp_path, ["Qwen3-0.6B", "Qwen3-235B-A22B"], RUNNERS)
    cells = {c.id for c in load_build(f).cells()}
    m = github_matrix(f)["include"]
    assert {c["cell"] for c in m} == cells  # none left out, whatever this machine has
    by_id = {c["cell"]: c for c in m}
    assert by_id["Qwen3-0.6B/gguf/Q4_K_M"]["runs_on"] == "ubuntu-latest"
    big = by_id["Qwen3-235B-A22B/gguf/Q4_K_M"]
    assert big["runs_on"] == "big" and big["needs"]["disk_gb"] > 470 and big["needs"]["ram_gb"] > 0
    assert set(big["needs"]) == {"ram_gb", "disk_gb", "gpu_gb", "hours"}
    assert all("/" not in c["slug"] and c["slug"].startswith(c["model_slug"] + "--") for c in m)


def test_cells_no_runner_can_take_stop_the_matrix_and_show_in_the_plan(tmp_path):
    f = _build(tmp_path, ["Qwen3-0.6B", "Qwen3-235B-A22B"])  # no [runners]: ubuntu-latest only
    with pytest.raises(UsageError) as err:
        github_matrix(f)
    line = err.value.one_line()
    assert "fit no runner" in line and "Qwen3-235B-A22B/gguf/Q4_K_M" in line and "GB disk" in line
    assert "Qwen3-0.6B/" not in line and "[runners" in line
    rows = {r.cell.id: r for r in plan(load_build(f))}
    assert rows["Qwen3-235B-A22B/gguf/Q4_K_M"].runner is None
    assert rows["Qwen3-0.6B/gguf/Q4_K_M"].runner.label == "ubuntu-latest"
    r = CliRunner().invoke(main, ["build", str(f), "--plan"])
    assert r.exit_code == 0 and "fit no runner" in r.output and "Qwen3-235B-A22B/gptq/4" in r.output
    r = CliRunner().invoke(main, ["build", str(f), "--emit", "github-matrix"])
    assert r.exit_code == 2 and "fit no runner" in r.output
    # the small model alone routes entirely to the default runner
    r = CliRunner().invoke(main, ["build", str(f), "--model", "Qwen3-0.6B", "--emit", "github-matrix"])
    assert r.exit_code == 0 and {c["runs_on"] for c in json.loads(r.output)["include"]} == {"ubuntu-latest"}
    r = CliRunner().invoke(main, ["build", str(f), "--plan", "--json"])
    plan_rows = json.loads(r.output)
    assert all("needs" in p and "runner" in p for p in plan_rows)


def test_production_build_routes_the_small_models_to_ubuntu_latest():
    m = github_matrix(PRODUCTION, models=["Qwen3-0.6B", "Qwen3-1.7B"])["include"]
    assert len(m) == 26 and {c["runs_on"] for c in m} == {"ubuntu-latest"}
    spec = load_build(PRODUCTION)
    assert [r.label for r in spec.runners][0] == "ubuntu-latest" and len(spec.runners) >= 2


# --- merging jobs' outputs ------------------------------------------------------------------------


def test_merge_variant_by_variant_and_refuse_conflicts(tmp_path):
    a = make_artifact(tmp_path / "job-a", "gguf", variants={"Q4_K_M": 4})
    b = make_artifact(tmp_path / "job-b", "gguf", variants={"Q8_0": 8})
    dest = tmp_path / "out" / a.name
    assert "Qwen3-8B-Q4_K_M.gguf" in merge_variants(a, dest, ["Q4_K_M"])
    assert "Qwen3-8B-Q8_0.gguf" in merge_variants(b, dest, ["Q8_0"])
    m = Manifest.read(dest)
    assert set(m.variants) == {"Q4_K_M", "Q8_0"} and verify_files(dest, m) == []
    assert merge_variants(a, dest, ["Q4_K_M"]) == []  # the same variant again: nothing to do
    # another job's Q4_K_M with other bytes is a conflict, and the merged folder is unchanged
    c = make_artifact(tmp_path / "job-c", "gguf", variants={"Q4_K_M": 4}, size=5000)
    with pytest.raises(MergeConflictError, match="already holds Q4_K_M with other files"):
        merge_variants(c, dest, ["Q4_K_M"])
    assert Manifest.read(dest).to_dict() == m.to_dict() and verify_files(dest, m) == []
    # a file already there but not recorded is not overwritten
    d = make_artifact(tmp_path / "job-d", "gguf", variants={"Q6_K": 6})
    (dest / "Qwen3-8B-Q6_K.gguf").write_bytes(b"mine")
    with pytest.raises(MergeConflictError, match="not recorded"):
        merge_variants(d, dest, ["Q6_K"])
    assert (dest / "Qwen3-8B-Q6_K.gguf").read_bytes() == b"mine"
    # a damaged upload is refused before anything is copied
    e = make_artifact(tmp_path / "job-e", "gguf", variants={"Q5_K_M": 5})
    (e / "Qwen3-8B-Q5_K_M.gguf").write_bytes(b"damaged")
    with pytest.raises(MergeConflictError, match="differs from its job's"):
        merge_variants(e, dest, ["Q5_K_M"])
    assert not (dest / "Qwen3-8B-Q5_K_M.gguf").exists()


# --- the example workflow ---------------------------------------------------------------------------


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _runs(job: dict) -> list[str]:
    return [s["run"] for s in job["steps"] if "run" in s]


def test_workflow_is_safe_to_adopt():
    wf = _workflow()
    assert wf["permissions"] == {"contents": "read"}  # nothing more than reading the repository
    for name, job in wf["jobs"].items():
        for run in _runs(job):
            # inputs and matrix values reach the shell through env:, never pasted into commands
            assert "${{" not in run, (name, run)
            # no hidden failures
            assert "|| true" not in run and "2>/dev/null" not in run, (name, run)
        for step in job["steps"]:
            assert not step.get("continue-on-error"), (name, step)


def test_workflow_installs_cpu_torch_and_caches():
    wf = _workflow()
    index = wf["env"]["TORCH_INDEX"]
    assert index == "https://download.pytorch.org/whl/cpu" and wf["env"]["TORCH"] == "torch==2.13.0"
    for name, job in wf["jobs"].items():
        runs = "\n".join(_runs(job))
        if "pip install -e" in runs:  # torch comes from the CPU index before anything pulls it in
            first = runs.index('pip install "$TORCH" --index-url "$TORCH_INDEX"')
            assert first < runs.index("pip install -e"), name
            assert "pip wheel" not in runs or first < runs.index("pip wheel"), name
        pythons = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-python")]
        assert pythons and all(s["with"].get("cache") == "pip" for s in pythons), name
    cell = wf["jobs"]["cell"]
    assert any(str(s.get("uses", "")).startswith("actions/cache") for s in cell["steps"])  # llama.cpp wheel
    assert "--find-links" in "\n".join(_runs(cell))


def test_workflow_routes_cells_and_collects_per_model(tmp_path):
    wf = _workflow()
    jobs = wf["jobs"]
    cell, collect = jobs["cell"], jobs["collect"]
    assert cell["runs-on"] == "${{ matrix.runs_on }}"
    assert cell["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.cells) }}"
    upload = next(s for s in cell["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["name"] == "cell-${{ matrix.slug }}"
    assert collect["if"].startswith("${{ always()")
    download = next(
        s for s in collect["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact")
    )
    assert download["with"]["pattern"] == "cell-${{ matrix.model_slug }}--*"  # one model's cells only
    runs = "\n".join(_runs(collect))
    assert '--collect "$d"' in runs and '--model "$MODEL"' in runs and "cp " not in runs
    # the matrix fields the workflow reads are the ones --emit github-matrix writes
    used = set(re.findall(r"\{\{ *matrix\.(\w+)", WORKFLOW.read_text()))
    f = _build(tmp_path, ["Qwen3-0.6B"])
    entry = github_matrix(f)["include"][0]
    assert used <= set(entry) | {"model"}, used - set(entry)
    assert entry["slug"].startswith(entry["model_slug"] + "--")


def test_collect_names_a_folder_that_is_no_job_output(tmp_path):
    f = _build(tmp_path, ["Qwen3-0.6B"])
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["build", str(f), "--collect", str(tmp_path / "empty")])
    assert r.exit_code == 1 and "holds no state.json" in r.output
    assert not (tmp_path / "out" / "report").exists()
