"""Peak RSS and wall time of validation's two phases (the reference; the artifact scored in
llama.cpp against the stored reference) before and after the layer-at-a-time reference and the
block scorer, on the micro models and Qwen3-0.6B-shaped random checkpoints.

Each measurement is a fresh Python process (its VmHWM is the figure: ru_maxrss would keep the forking parent's peak), run once with the
code tree given as ``--before`` (e.g. ``git archive e69b14f | tar -x -C /tmp/before``) and once
with this checkout, interleaved model by model. The 0.6B shapes are written by
``qwen3_quant.testing.synthetic`` (real config, random weights). Usage:

    PYTHONPATH=. python benchmarks/memory_bench.py --before /tmp/before --out benchmarks/memory.json

``--suite gptq`` measures GPTQ-Int4 quantisation instead (the GPTQModel worker's peak RSS, from
the manifest, and the wall time of the whole ``quantize``), with ``--calib-samples`` samples of
``--calib-seq`` tokens from the default mix (MoE: ``--starved-experts rtn``):

    PYTHONPATH=. python benchmarks/memory_bench.py --suite gptq --before /tmp/before \
        --out benchmarks/memory-gptq.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# child programs: each prints one JSON line {"peak": bytes, "seconds": s, ...}
_COMMON = """
import json, sys, time
from qwen3_quant.io import peak_rss_bytes
from pathlib import Path
t0 = time.perf_counter()
def done(**kw):
    kw.update(peak=peak_rss_bytes(), seconds=time.perf_counter() - t0)
    print(json.dumps(kw))
"""

REFERENCE = (
    _COMMON
    + """
from qwen3_quant.eval.evaluate import get_reference, _tokenize
from qwen3_quant.eval.protocol import text_sha256
from qwen3_quant.textdata import builtin_text
base, ref_dir, n, ctx, extra = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
text = builtin_text()
tokens = _tokenize(base, text, n)
t0 = time.perf_counter()
ref = get_reference(base, tokens, text_sha256(text), ctx, 32, ref_dir, **extra)
done(ppl=ref.perplexity)
"""
)

EVALUATE = (
    _COMMON
    + """
from qwen3_quant.eval.evaluate import EvalOptions, evaluate
art, base, ref_dir, n, ctx, extra = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
res = evaluate(art, base=base, options=EvalOptions(max_tokens=n, ctx=ctx, speed=False, reference_dir=ref_dir, **extra))
done(ppl=res.perplexity, kld=res.kld_mean, top1=res.top1_agreement)
"""
)

QUANTIZE_GGUF = (
    _COMMON
    + """
from qwen3_quant.quantize import quantize
quantize(sys.argv[1], "gguf", out_dir=sys.argv[2], validate=False, types=sys.argv[3], imatrix=False)
done()
"""
)

QUANTIZE_GPTQ = (
    _COMMON
    + """
from qwen3_quant.artifact import load_manifest
from qwen3_quant.quantize import quantize
model, out, mix, moe = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
opts = {"calib": mix} | ({"starved_experts": "rtn"} if moe else {})
quantize(model, "gptq", out_dir=out, validate=False, **opts)
d = load_manifest(out)["variants"]["W4g128"]["details"]
import hashlib
from safetensors import safe_open
digest = hashlib.sha256()  # of the tensors (names, dtypes, values), not of the files' headers
for shard in sorted(out.glob("*.safetensors")):
    with safe_open(str(shard), "pt") as fh:
        for name in sorted(fh.keys()):
            t = fh.get_tensor(name)
            digest.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
            digest.update(t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
            del t
done(worker_peak=d["worker_peak_rss_bytes"], seconds_routing=d.get("seconds_routing"),
     seconds_quantize=d.get("seconds_quantize"), sha={"tensors": digest.hexdigest()})
"""
)


def bench_models(work: Path, layers: list[int]) -> dict[str, Path]:
    """The micro models and Qwen3-0.6B-shaped checkpoints (real config, random weights) of ``layers``
    decoder layers, made in ``work`` the first time."""
    from qwen3_quant.catalog import bundled_models
    from qwen3_quant.testing.synthetic import catalog_shape, write_random_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    models = dict(bundled_models())
    for n in layers:
        p = work / f"Qwen3-0.6B-shape-L{n}"
        if not (p / "config.json").is_file():
            write_random_checkpoint(catalog_shape("Qwen3-0.6B", layers=n), p)
        models[f"Qwen3-0.6B shape, {n} layers"] = p
    return models


def run(tree: Path, program: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, env=env, cwd=tree
    )
    if out.returncode:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", type=Path, help="only print the tables of a JSON this script wrote")
    ap.add_argument("--suite", choices=("validation", "gptq"), default="validation")
    ap.add_argument("--only", nargs="*", help="only the models whose name contains one of these")
    ap.add_argument("--calib-samples", type=int, default=8)
    ap.add_argument("--calib-seq", type=int, default=256)
    ap.add_argument("--before", type=Path, help="the code tree to compare with")
    ap.add_argument("--work", type=Path, default=Path("/tmp/qwen3-quant-membench"))
    ap.add_argument("--out", type=Path, default=HERE / "benchmarks" / "memory.json")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--layers", type=int, nargs="*", default=[28, 56])
    ap.add_argument(
        "--max-whole-params", type=float, default=0.7e9, help="skip the whole-model fp32 reference above this"
    )
    args = ap.parse_args()
    if args.render:
        data = json.loads(args.render.read_text())
        print(render_gptq(data) if data.get("suite") == "gptq" else render(data))
        return
    sys.path.insert(0, str(HERE))
    from qwen3_quant.catalog.architecture import param_counts
    from qwen3_quant.checkpoint import inspect_checkpoint

    models = bench_models(args.work, args.layers)
    if args.only:
        models = {k: v for k, v in models.items() if any(o in k for o in args.only)}
    if args.suite == "gptq":
        gptq_suite(args, models)
        return
    rows = []
    n, ctx = str(args.tokens), str(args.ctx)
    for name, path in models.items():
        params = param_counts(inspect_checkpoint(path).arch).total
        gguf = args.work / f"{path.name}-gguf"
        q = {}
        if not gguf.exists():
            q = run(HERE, QUANTIZE_GGUF, str(path), str(gguf), "Q8_0")
        art = str(next(gguf.glob("*.gguf")))
        row = {"model": name, "params": params, "gguf_q8_0_quantise": q}
        refs = {}
        for label, tree in (("after", HERE), ("before", args.before)):
            ref_dir = args.work / f"ref-{label}-{path.name}-{time.time_ns()}"
            if label == "before" and params > args.max_whole_params:
                row["before_reference"] = {
                    "skipped": f"whole model in fp32 above {args.max_whole_params:.2g}"
                }
                ref_dir = refs["after"]  # the same fp32 reference, stored under the same name
            else:
                row[f"{label}_reference"] = run(tree, REFERENCE, str(path), str(ref_dir), n, ctx, "{}")
                refs[label] = ref_dir
            if label == "after" and params < 0.1e9:  # bf16's effect on KLD, on the trained micro models
                bf = args.work / f"ref-bf16-{path.name}-{time.time_ns()}"
                row["after_reference_bf16"] = run(
                    tree, REFERENCE, str(path), str(bf), n, ctx, json.dumps({"dtype": "bfloat16"})
                )
                row["after_scoring_vs_bf16"] = run(
                    tree,
                    EVALUATE,
                    art,
                    str(path),
                    str(bf),
                    n,
                    ctx,
                    json.dumps({"reference_dtype": "bfloat16"}),
                )
            # the artifact phase alone: the reference is read from the store
            row[f"{label}_scoring"] = run(tree, EVALUATE, art, str(path), str(ref_dir), n, ctx, "{}")
        print(json.dumps(row), flush=True)
        rows.append(row)
    args.out.write_text(json.dumps({"tokens": args.tokens, "ctx": args.ctx, "rows": rows}, indent=1) + "\n")
    print(render(json.loads(args.out.read_text())))


def gptq_suite(args, models: dict) -> None:
    """GPTQ-Int4 quantisation with ``--before``'s code and this checkout, model by model (the
    JSON is rewritten after each model, so a long run leaves its finished rows)."""
    from qwen3_quant.catalog.architecture import param_counts
    from qwen3_quant.checkpoint import inspect_checkpoint

    mix = args.work / f"calib-{args.calib_samples}x{args.calib_seq}.toml"
    text = (HERE / "calib" / "default.toml").read_text()
    text = text.replace("samples = 128", f"samples = {args.calib_samples}")
    mix.write_text(text.replace("seq_len = 512", f"seq_len = {args.calib_seq}"))
    data = {"suite": "gptq", "calib_samples": args.calib_samples, "calib_seq": args.calib_seq, "rows": []}
    for name, path in models.items():
        arch = inspect_checkpoint(path).arch
        row = {"model": name, "params": param_counts(arch).total}
        for label, tree in (("before", args.before), ("after", HERE)):
            out = args.work / f"gptq-{label}-{path.name}-{time.time_ns()}"
            row[label] = run(tree, QUANTIZE_GPTQ, str(path), str(out), str(mix), "1" if arch.is_moe else "0")
            if "sha" in row[label]:
                import shutil

                shutil.rmtree(out, ignore_errors=True)
        b, a = row["before"].get("sha"), row["after"].get("sha")
        row["same_weights"] = bool(b) and b == a
        print(json.dumps(row), flush=True)
        data["rows"].append(row)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(render_gptq(data))


def render_gptq(data: dict) -> str:
    lines = [
        f"GPTQ W4g128, {data['calib_samples']} calibration samples of {data['calib_seq']} tokens; "
        "peak RSS (VmHWM) of the GPTQModel worker and of the calling process (calibration set, "
        "export, manifest), and wall time of the whole quantize().",
        "",
        "| model | params | worker peak before | after | after / before | caller peak before | after "
        "| time before | after | after / before | same weights |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        b, a = r.get("before"), r.get("after")
        lines.append(
            f"| {r['model']} | {r['params'] / 1e9:.3g}B | {_cell(b, 'worker_peak')} | {_cell(a, 'worker_peak')} "
            f"| {_ratio(a, b, 'worker_peak')} | {_cell(b, 'peak')} | {_cell(a, 'peak')} "
            f"| {_cell(b, 'seconds')} | {_cell(a, 'seconds')} "
            f"| {_ratio(a, b, 'seconds')} | {_same(r)} |"
        )
    return "\n".join(lines)


def _same(row: dict) -> str:
    """Whether before and after wrote the same tensors ("-" for rows measured when the check hashed
    the files, whose headers the streaming float16 rewrite lays out differently)."""
    if "tensors" not in ((row.get("after") or {}).get("sha") or {}):
        return "-"
    return "yes" if row.get("same_weights") else "no"


def _cell(m: dict | None, key: str) -> str:
    if not m:
        return "-"
    if "skipped" in m:
        return "not run"
    if "error" in m:
        return "error"
    return f"{m[key] / 1e9:.2f} GB" if key.endswith("peak") else f"{m[key]:.0f} s"


def _ratio(a: dict | None, b: dict | None, key: str) -> str:
    if not a or not b or key not in a or key not in b:
        return "-"
    return f"{a[key] / b[key]:.2f}"


def render(data: dict) -> str:
    """The tables of benchmarks/memory.md from the JSON this script writes."""
    lines = [
        f"{data['tokens']:,} tokens in windows of {data['ctx']}; peak RSS (VmHWM of a fresh process) and wall time.",
        "",
        "| model | params | phase | before peak | after peak | after / before | before time | after time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        for phase, label in (("reference", "reference (fp32)"), ("scoring", "artifact scoring (GGUF Q8_0)")):
            b, a = r.get(f"before_{phase}"), r.get(f"after_{phase}")
            lines.append(
                f"| {r['model']} | {r['params'] / 1e9:.3g}B | {label} | {_cell(b, 'peak')} | {_cell(a, 'peak')} "
                f"| {_ratio(a, b, 'peak')} | {_cell(b, 'seconds')} | {_cell(a, 'seconds')} |"
            )
        bf = r.get("after_reference_bf16")
        if bf:
            lines.append(
                f"| {r['model']} | {r['params'] / 1e9:.3g}B | reference (bf16 layers) | | {_cell(bf, 'peak')} | | "
                f"| {_cell(bf, 'seconds')} |"
            )
    lines += [
        "",
        "| model | KLD of Q8_0 vs fp32 reference | vs bf16-layer reference | top-1 vs fp32 | vs bf16 |",
        "|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        a, bf = r.get("after_scoring") or {}, r.get("after_scoring_vs_bf16")
        if bf and "kld" in a and "kld" in bf:
            lines.append(
                f"| {r['model']} | {a['kld']:.3g} | {bf['kld']:.3g} | {a['top1']:.4f} | {bf['top1']:.4f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
