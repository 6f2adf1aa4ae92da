"""Peak RSS and wall time of the ONNX export (int4, int8) before and after the layer-at-a-time
exporter, on the micro models and Qwen3-0.6B-shaped random checkpoints (benchmarks/memory.md).

"Before" is the same checkout's whole-model path (``run_builder(..., streaming=False)``: the builder
loads the checkpoint with transformers and quantises the finished graph), "after" the default
streaming path; each is a fresh Python process (VmHWM), interleaved model by model. The whole-model
path is skipped above ``--max-whole-params`` (it needs about 8 bytes a weight). Usage:

    PYTHONPATH=. python benchmarks/memory_onnx_bench.py --out benchmarks/memory_onnx.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "benchmarks"))
from memory_bench import _COMMON, _cell, _ratio, bench_models, run  # noqa: E402

EXPORT_ONNX = (
    _COMMON
    + """
from qwen3_quant.checkpoint import inspect_checkpoint
from qwen3_quant.formats.onnx import FORMAT
from qwen3_quant.formats.onnx.build import run_builder
src, out, precision, streaming = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
run_builder(inspect_checkpoint(src), out, FORMAT.parse_options({"precision": precision}), out / ".cache",
            streaming=streaming)
done(bytes=sum(p.stat().st_size for p in out.glob("model.onnx*")))
"""
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", type=Path, help="only print the table of a JSON this script wrote")
    ap.add_argument("--work", type=Path, default=Path("/tmp/qwen3-quant-membench"))
    ap.add_argument("--out", type=Path, default=HERE / "benchmarks" / "memory_onnx.json")
    ap.add_argument("--layers", type=int, nargs="*", default=[28, 56])
    ap.add_argument("--precisions", nargs="*", default=["int4", "int8"])
    ap.add_argument(
        "--max-whole-params", type=float, default=0.3e9, help="skip the whole-model path above this"
    )
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    sys.path.insert(0, str(HERE))
    from qwen3_quant.catalog.architecture import param_counts
    from qwen3_quant.checkpoint import inspect_checkpoint

    models = bench_models(args.work, args.layers)
    rows = []
    for name, path in models.items():
        params = param_counts(inspect_checkpoint(path).arch).total
        for precision in args.precisions:
            row = {"model": name, "params": params, "precision": precision}
            for label, streaming in (("before", "0"), ("after", "1")):
                out = args.work / f"onnx-{label}-{path.name}-{precision}"
                shutil.rmtree(out, ignore_errors=True)
                if label == "before" and params > args.max_whole_params:
                    row[label] = {"skipped": f"whole model above {args.max_whole_params:.2g} parameters"}
                else:
                    row[label] = run(HERE, EXPORT_ONNX, str(path), str(out), precision, streaming)
                shutil.rmtree(out, ignore_errors=True)
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(render(json.loads(args.out.read_text())))


def render(data: dict) -> str:
    """The ONNX table of benchmarks/memory.md from the JSON this script writes."""
    lines = [
        "| model | params | ONNX | before peak | after peak | after / before | before time | after time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        b, a = r.get("before"), r.get("after")
        lines.append(
            f"| {r['model']} | {r['params'] / 1e9:.3g}B | {r['precision']} | {_cell(b, 'peak')} | {_cell(a, 'peak')} "
            f"| {_ratio(a, b, 'peak')} | {_cell(b, 'seconds')} | {_cell(a, 'seconds')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
