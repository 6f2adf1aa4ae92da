"""The CLI must start instantly: no torch, transformers or format libraries at import or --help."""

import json
import subprocess
import sys

from click.testing import CliRunner

HEAVY = ("torch", "transformers", "gptqmodel", "llama_cpp", "onnxruntime", "onnx", "gguf", "numpy")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_cli_is_light():
    mods = _modules_after("import qwen3_quant.cli")
    assert not [m for m in HEAVY if m in mods]


def test_help_is_light_and_lists_commands():
    code = (
        "from click.testing import CliRunner\nfrom qwen3_quant.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\nassert r.exit_code == 0, r.output\n"
        "assert 'models' in r.output and 'eval' in r.output and 'quantize' in r.output"
    )
    mods = _modules_after(code)
    assert not [m for m in HEAVY if m in mods]


def test_version_and_short_help_flag():
    from qwen3_quant import __version__
    from qwen3_quant.cli import main

    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(main, ["-h"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_unknown_model_is_one_clear_line(tmp_path):
    from qwen3_quant.cli import main

    r = CliRunner().invoke(main, ["check", "Qwen3-9B"])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown model 'Qwen3-9B'" in lines[0] and "Qwen3-8B" in lines[0]
    assert "Traceback" not in r.output


def test_missing_folder_is_one_clear_line(tmp_path):
    from qwen3_quant.cli import main

    r = CliRunner().invoke(main, ["check", str(tmp_path / "nope")])
    assert r.exit_code == 1
    assert "model folder not found" in r.output and "Traceback" not in r.output


def test_quantize_rejects_unknown_format_before_work():
    from qwen3_quant.cli import main

    r = CliRunner().invoke(main, ["quantize", "Qwen3-8B", "--format", "exl2"])
    assert r.exit_code == 2 and "exl2" in r.output
