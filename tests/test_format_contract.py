"""A format defined entirely in this module goes through everything the built-in ones do:
``quantize`` (library and CLI, with its own flag) -> validation -> ``eval`` -> model card -> local
``publish`` -> a two-cell ``build`` with its report, with no edit anywhere in ``qwen3_quant/``.

The format, ``f16copy``, is the unquantised checkpoint with its weights cast to float16 (or kept
bfloat16), served by its own runner. It is registered with :func:`qwen3_quant.formats.register`
in this process and, for the build's worker processes, declared as an entry point of the
``qwen3_quant.formats`` group. docs/adding-a-format.md follows this file.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qwen3_quant.artifact import VariantKey, decide_variant, load_manifest, record_variant
from qwen3_quant.errors import FormatContractError, UsageError
from qwen3_quant.eval.transformers_runner import TransformersRunner
from qwen3_quant.formats import get_format, register, unregister
from qwen3_quant.formats.base import (
    Option,
    QuantFormat,
    Runtime,
    SizeEstimate,
    TestDouble,
    UsageContext,
    check_contract,
)
from qwen3_quant.io import atomic_output

DTYPES = ("float16", "bfloat16")
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")

# every hook of the format contract this format fills in: its declarations ...
DECLARED = (
    "name",
    "extra",
    "libraries",
    "options",
    "runtimes",
    "table_types",
    "cell_axis",
    "card_description",
    "hub_library",
    "recipe_labels",
)
# ... and its methods (the abstract ones all formats must implement; eval_targets and card_tags
# keep the defaults)
IMPLEMENTED = (
    "estimate",
    "nominal_bits",
    "available",
    "parse_options",
    "calibrates",
    "artifact_name",
    "variants",
    "quantize",
    "recognises",
    "usage",
    "write_test_double",
)


class CopyRunner(TransformersRunner):
    """The copy's own runtime: transformers computing in float32 from the cast weights."""

    runtime = "transformers-copy"


class F16Copy(QuantFormat):
    name = "f16copy"
    extra = "all"
    libraries = ("safetensors",)
    options = (Option("dtype", "Weights: float16 or bfloat16.", default="float16"),)
    runtimes = (Runtime("transformers-copy", f"{__name__}:CopyRunner", "transformers (float32 compute)"),)
    table_types = DTYPES
    cell_axis = "dtype"
    card_description = "A cast safetensors copy"
    hub_library = "transformers"
    recipe_labels = {"dtype": "Weights"}

    def estimate(self, arch, variant: str) -> SizeEstimate:
        from qwen3_quant.catalog.architecture import param_counts

        n = param_counts(arch).total
        return SizeEstimate(2 * n, 6 * n)

    def nominal_bits(self, variant: str) -> int:
        return 16

    def available(self) -> bool:
        return True

    def parse_options(self, options: dict[str, Any]) -> str:
        for key in options:
            if key != "dtype":
                raise UsageError(f"{key} does not apply to --format f16copy", hint="it takes --dtype")
        dtype = str(options.get("dtype", "float16"))
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype}", hint="use float16 or bfloat16")
        return dtype

    def calibrates(self, config: str) -> bool:
        return False

    def artifact_name(self, model_name: str, config: str) -> str:
        return f"{model_name}-{config.upper()}-COPY"

    def variants(self, config: str) -> list[str]:
        return [config]

    def quantize(
        self, source, info, config, out_dir, *, overwrite=False, progress=None, provenance=None, device=None
    ):
        import torch
        from safetensors.torch import load_file, save_file

        src = source.manifest_record()
        key = VariantKey(self.name, config, src["fingerprint"], {"dtype": config})
        if not decide_variant(Path(out_dir), key, overwrite=overwrite):
            return [config]
        with atomic_output(Path(out_dir), overwrite=True) as tmp:
            tmp.mkdir(parents=True)
            dtype = getattr(torch, config)
            weights = {k: v.to(dtype) for k, v in load_file(info.path / "model.safetensors").items()}
            save_file(weights, tmp / "model.safetensors", metadata={"format": "pt"})
            shared = [f for f in COPIED if (info.path / f).is_file()]
            for f in shared:
                shutil.copy(info.path / f, tmp / f)
            cfg = json.loads((tmp / "config.json").read_text())
            (tmp / "config.json").write_text(json.dumps({**cfg, "dtype": config}, indent=2))
            record_variant(
                tmp,
                name=Path(out_dir).name,
                fmt=self.name,
                source=src,
                variant=config,
                files=["model.safetensors"],
                recipe={"bits": 16, "dtype": config},
                key=key,
                shared_files=shared,
                provenance=provenance,
            )
        return [config]

    def recognises(self, path: Path) -> str | None:
        return None  # known by its manifest only

    def usage(self, ctx: UsageContext) -> str:
        return f'### transformers\n\n```python\nAutoModelForCausalLM.from_pretrained("{ctx.repo_id or ctx.name}")\n```\n'

    def write_test_double(self, folder: Path, model: str, variant: str, bits: int, **kw: Any) -> TestDouble:
        (folder / "model.safetensors").write_bytes(b"\0" * kw.get("size", 64))
        return TestDouble(["model.safetensors"], [], {"bits": bits, "dtype": variant})


FORMAT = F16Copy()
SMALL = {"ctx": 64, "max_tokens": 300}


def test_the_hooks_listed_are_the_whole_contract():
    abstract = set(QuantFormat.__abstractmethods__)
    assert abstract == set(IMPLEMENTED)
    assert all(h in F16Copy.__dict__ for h in DECLARED + IMPLEMENTED)


def test_an_incomplete_format_is_refused_when_it_registers():
    class Half(QuantFormat):
        name = "half"

        def estimate(self, arch, variant):  # pragma: no cover
            raise AssertionError

    with pytest.raises(TypeError, match="abstract"):  # a missing method: not even an object
        Half()
    undeclared = type(
        "Undeclared", (QuantFormat,), {"name": "undeclared", **{m: F16Copy.__dict__[m] for m in IMPLEMENTED}}
    )
    with pytest.raises(
        FormatContractError, match="declares no extra; declares no libraries; declares no options"
    ):
        register(undeclared())
    with pytest.raises(FormatContractError, match="must declare Runtime"):
        register(type("NoRuntime", (F16Copy,), {"name": "noruntime", "runtimes": ()})())
    with pytest.raises(FormatContractError, match="cell_axis 'bits' is not one of its options"):
        register(type("BadAxis", (F16Copy,), {"name": "badaxis", "cell_axis": "bits"})())
    for name in ("undeclared", "noruntime", "badaxis"):
        with pytest.raises(UsageError, match=f"unknown format '{name}'"):
            get_format(name)


@pytest.fixture
def copy_format(monkeypatch, tmp_path):
    """The format registered in this process, and as an entry point for child processes."""
    check_contract(FORMAT)
    register(FORMAT)
    plugins = tmp_path / "plugins"
    dist = plugins / "f16copy_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: f16copy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[qwen3_quant.formats]\nf16copy = {__name__}:FORMAT\n")
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([here, str(plugins), *filter(None, [os.environ.get("PYTHONPATH")])])
    )
    yield FORMAT
    unregister(FORMAT.name)


@pytest.mark.slow
def test_a_format_from_outside_the_package_goes_everywhere(copy_format, tmp_path, cache_dir, monkeypatch):
    from qwen3_quant.build import build
    from qwen3_quant.cli import main
    from qwen3_quant.eval.evaluate import EvalOptions
    from qwen3_quant.publish import publish
    from qwen3_quant.quantize import quantize

    # quantize and validate (library)
    res = quantize("Qwen3-Micro", "f16copy", out_root=tmp_path / "out", eval_options=EvalOptions(**SMALL))
    art = res.artifact_dir
    assert art.name == "Qwen3-Micro-FLOAT16-COPY" and res.variants == ["float16"]
    [v] = res.validations
    assert v.passed and v.runtime == "transformers-copy" and v.kld_mean < 1e-3
    m = load_manifest(art)
    assert m["variants"]["float16"]["validation"]["passed"] is True
    assert m["variants"]["float16"]["provenance"]["kind"] == "python"
    assert "quantize('Qwen3-Micro', 'f16copy')" in m["variants"]["float16"]["provenance"]["command"]
    # a rerun keeps it; other settings in the same folder need --overwrite
    assert quantize("Qwen3-Micro", "f16copy", out_dir=art, validate=False).variants == ["float16"]

    # the CLI builds --dtype from the format's declaration
    cli_out = tmp_path / "cli"
    r = CliRunner().invoke(
        main,
        ["quantize", "Qwen3-Micro", "--format", "f16copy", "--dtype", "bfloat16", "-o", str(cli_out)]
        + ["--ctx", "64", "--max-tokens", "300"],
    )
    assert r.exit_code == 0, r.output
    cmd = load_manifest(cli_out)["variants"]["bfloat16"]["provenance"]["command"]
    assert cmd.startswith("qwen3-quant quantize Qwen3-Micro --format f16copy --dtype bfloat16 -o ")
    r = CliRunner().invoke(main, ["quantize", "--help"])
    assert "--dtype" in r.output and "F16COPY: Weights: float16 or bfloat16" in r.output

    # eval (CLI) finds the format's runtime through the manifest
    r = CliRunner().invoke(
        main,
        [
            "eval",
            str(art),
            "--ctx",
            "64",
            "--max-tokens",
            "300",
            "--no-speed",
            "--json-out",
            str(tmp_path / "e.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["results"][0]["runtime"] == "transformers-copy"

    # model card and local publish
    pub = publish(art, tmp_path / "pub" / art.name)
    card = (Path(pub.url) / "README.md").read_text()
    assert "A cast safetensors copy" in card and 'from_pretrained("Qwen3-Micro-FLOAT16-COPY")' in card
    assert "| Weights | float16 |" in card and "transformers-copy" in card

    # a two-cell build in worker processes, with its report and publishing
    f = tmp_path / "build.toml"
    f.write_text(
        textwrap.dedent(f"""
        [build]
        name = "copy"
        models = ["Qwen3-Micro"]
        out = "{tmp_path / "bout"}"
        [eval]
        ctx = 64
        max_tokens = 300
        speed = false
        [[format]]
        name = "f16copy"
        dtype = ["float16", "bfloat16"]
        [publish]
        to = "{tmp_path / "bpub"}"
        """)
    )
    out = build(f)
    assert {c: e["status"] for c, e in out.entries.items()} == {
        "Qwen3-Micro/f16copy/float16": "passed",
        "Qwen3-Micro/f16copy/bfloat16": "passed",
    }, out.entries
    assert "Qwen3-Micro/f16copy/bfloat16" in (out.report_dir / "report.md").read_text()
    published = sorted(p.name for p in (tmp_path / "bpub").iterdir())
    assert published == ["Qwen3-Micro-BFLOAT16-COPY", "Qwen3-Micro-FLOAT16-COPY"]
    # the build's card reproduces the cell with a command a user can run
    card = (tmp_path / "bpub" / "Qwen3-Micro-BFLOAT16-COPY" / "README.md").read_text()
    assert (
        "qwen3-quant quantize Qwen3-Micro --format f16copy --dtype bfloat16 --ctx 64 --max-tokens 300" in card
    )
    assert "--build" not in card and "--cell" not in card


@pytest.mark.slow
def test_the_bundled_builds_card_reproduces_as_written(tmp_path, monkeypatch, cache_dir):
    """A cell of the bundled demo build, published; its card's Reproduce command runs as written."""
    from qwen3_quant.build import build
    from qwen3_quant.cli import main
    from qwen3_quant.publish import build_bundle

    cell = "Qwen3-Micro/gguf/Q8_0"
    out = build(None, out=tmp_path / "demo", cells=[cell])
    assert out.entries[cell]["status"] == "passed", out.entries[cell]
    card = build_bundle(out.entries[cell]["artifact_dir"], repo_id="org/Qwen3-Micro-GGUF").card
    section = card.split("## Reproduce", 1)[1]
    lines = [ln for ln in section.splitlines() if ln.startswith("qwen3-quant ")]
    assert len(lines) == 1, section
    assert "the bundled demo build" in section and cell in section
    words = shlex.split(lines[0])
    assert words[:4] == ["qwen3-quant", "quantize", "Qwen3-Micro", "--format"]
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, words[1:])
    assert r.exit_code == 0, r.output
    again = load_manifest(tmp_path / "qwen3-quant-out" / "Qwen3-Micro-GGUF")
    assert again["variants"]["Q8_0"]["validation"]["passed"] is True
