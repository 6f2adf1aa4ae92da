"""What a plain wheel install gets: the named mixes and the packaged calibration set, with no
shared data folder anywhere. Builds the wheel from a copy of this checkout (about 10 s) and
installs it, without its dependencies, into a fresh virtual environment that borrows them from
the running one (a .pth line, so this checkout's editable install is not on its path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "qwen3-quant-out",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with qwen3-quant installed from a wheel built here; its bin folder."""
    pytest.importorskip("pip")
    from importlib.metadata import PackageNotFoundError, version

    try:  # not imported here: setuptools' distutils shim refuses an already imported distutils
        major = int(version("setuptools").split(".")[0])
    except PackageNotFoundError:
        major = 0
    if major < 77:
        pytest.skip("building the wheel needs setuptools >= 77 (pyproject's SPDX licence string)")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(ROOT, src, symlinks=False, ignore=IGNORE)  # the mixes link becomes files
    wheels = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
        ],
        check=True,
        cwd=root,
    )
    (wheel,) = wheels.glob("qwen3_quant-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "borrowed-deps.pth").write_text("".join(p + "\n" for p in sorted(deps)))
    subprocess.run(
        [py, "-m", "pip", "install", "--no-deps", "--ignore-installed", "--no-index", "-q", str(wheel)],
        check=True,
        cwd=root,
    )
    return venv / "bin"


def _run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QWEN3_QUANT_DATA", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    return subprocess.run(
        list(args), capture_output=True, text=True, env=env, cwd=bin_dir.parent.parent, check=False
    )


def test_the_wheel_ships_the_mixes_and_the_calibration_set(installed):
    where = _run(
        installed, str(installed / "python"), "-c", "import qwen3_quant; print(qwen3_quant.__file__)"
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed.parent)), where.stdout  # not this checkout

    listed = _run(installed, str(installed / "qwen3-quant"), "calib", "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("default", "text", "chat", "builtin", "hub", "generated"):
        assert f"{name} " in listed.stdout

    shown = _run(installed, str(installed / "qwen3-quant"), "calib", "show", "default", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "warn" not in shown.stderr.lower(), shown.stderr
    s = json.loads(shown.stdout)
    assert s["samples"] == 128 and s["seq_len"] == 512 and s["tokens"] == 128 * 512
    assert "/site-packages/qwen3_quant/assets/mixes/default.toml" in s["origin"]
    assert len(s["sources"]) == 8 and all(v["tokens"] > 0 for v in s["sources"].values())
