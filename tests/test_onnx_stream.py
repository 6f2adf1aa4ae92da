"""The layer-at-a-time ONNX exporter: the same graph and weights as the builder's whole-model path,
and a peak host memory that does not grow with the model's depth."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


def test_export_peak_estimate_is_one_layer_or_the_head_not_the_model():
    from qwen3_quant.catalog import catalog
    from qwen3_quant.formats.onnx import FORMAT

    for name, entry in catalog().items():
        a = entry.arch
        deep = dataclasses.replace(a, num_hidden_layers=4 * a.num_hidden_layers)
        for p in ("int4", "int8", "fp16", "fp32"):
            assert (
                FORMAT.estimate(deep, p).quantise_peak_bytes == FORMAT.estimate(a, p).quantise_peak_bytes
            ), name
    assert FORMAT.estimate(catalog()["Qwen3-8B"].arch, "int4").quantise_peak_bytes < 4e9
    assert FORMAT.estimate(catalog()["Qwen3-235B-A22B"].arch, "int4").quantise_peak_bytes < 64e9


def _build(src: Path, out: Path, precision: str, streaming: bool) -> Path:
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.onnx import FORMAT
    from qwen3_quant.formats.onnx.build import run_builder

    cfg = FORMAT.parse_options({"precision": precision})
    run_builder(inspect_checkpoint(src), out, cfg, out / ".cache", streaming=streaming)
    return out


def _graph(folder: Path):
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(folder / "model.onnx")
    inits = {i.name: numpy_helper.to_array(i, base_dir=str(folder)) for i in m.graph.initializer}
    nodes = sorted(
        (
            n.name,
            n.op_type,
            tuple(n.input),
            tuple(n.output),
            repr(sorted((a.name, repr(helper.get_attribute_value(a))) for a in n.attribute)),
        )
        for n in m.graph.node
    )
    return inits, nodes, [i.name for i in m.graph.input], [o.name for o in m.graph.output]


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,precision",
    [("micro_dense", "int4"), ("micro_moe", "int8"), ("untied", "int4"), ("micro_dense", "fp32")],
)
def test_streaming_export_equals_the_whole_model_export(request, tiny_model, tmp_path, model, precision):
    """Every initialiser byte-identical, the same nodes, inputs and outputs; so the same logits.
    ``untied`` (tiny Qwen3-8B) has a separate embedding matrix, quantised as a Gather."""
    from _onnx_builds import prompt

    from qwen3_quant.formats.onnx.runner import OnnxRuntimeRunner

    src = tiny_model("Qwen3-8B") if model == "untied" else request.getfixturevalue(model)
    old = _build(src, tmp_path / "whole", precision, streaming=False)
    new = _build(src, tmp_path / "stream", precision, streaming=True)
    (oi, on, oin, oout), (ni, nn, nin, nout) = _graph(old), _graph(new)
    assert sorted(oi) == sorted(ni)
    for name, arr in oi.items():
        assert arr.dtype == ni[name].dtype and arr.shape == ni[name].shape, name
        assert np.array_equal(arr, ni[name]), name
    assert on == nn and oin == nin and oout == nout
    ids = prompt(src, 24)
    with OnnxRuntimeRunner(old, ctx=64) as r:
        a = r.logits(ids)
    with OnnxRuntimeRunner(new, ctx=64) as r:
        b = r.logits(ids)
    assert np.array_equal(a, b)


_PEAK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.onnx import FORMAT
    from qwen3_quant.formats.onnx.build import run_builder
    from qwen3_quant.io import peak_rss_bytes
    out = Path(sys.argv[2])
    cfg = FORMAT.parse_options({"precision": sys.argv[3]})
    run_builder(inspect_checkpoint(Path(sys.argv[1])), out, cfg, out / ".cache")
    print(peak_rss_bytes())
    """
)


def _peak(model: Path, out: Path, precision: str) -> int:
    r = subprocess.run(
        [sys.executable, "-c", _PEAK, str(model), str(out), precision],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(r.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_export_peak_memory_stays_flat_as_depth_grows(tmp_path):
    """Same width, 2 and 10 decoder layers (36 MB of fp32 weights a layer, 285 MB more in all): the
    int4 export's peak grows by less than one layer, and the format's estimate covers it."""
    from qwen3_quant.catalog import catalog
    from qwen3_quant.formats.onnx import FORMAT
    from qwen3_quant.testing.tiny import build_model, tiny_arch

    arch = tiny_arch(catalog()["Qwen3-8B"].arch, layers=2, hidden=1024)
    deep_arch = dataclasses.replace(arch, num_hidden_layers=10)
    shallow = build_model(arch, tmp_path / "L2")
    deep = build_model(deep_arch, tmp_path / "L10")
    layer_bytes = 4 * (2 * 1024 * 1024 + 2 * 1024 * 256 + 3 * 1024 * 2048)
    small = _peak(shallow, tmp_path / "o2", "int4")
    big = _peak(deep, tmp_path / "o10", "int4")
    print(f"ONNX int4 export peak RSS: 2 layers {small / 1e6:.0f} MB, 10 layers {big / 1e6:.0f} MB")
    assert big - small < layer_bytes, (small, big)
    est = FORMAT.estimate(deep_arch, "int4").quantise_peak_bytes
    assert big <= est < big + 1.0e9, (big, est)
    assert json.loads((tmp_path / "o10" / "genai_config.json").read_text())["model"]["decoder"]
