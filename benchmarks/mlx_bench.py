"""MLX 4-bit / 8-bit against GGUF Q4_K_M / Q8_0 and GPTQ-Int4 on the micro models, in one run.

For each micro model: makes the artifacts with qwen3-quant (MLX in mlx-lm, GGUF with llama.cpp's
quantiser and the default importance matrix, GPTQ with GPTQModel and the default calibration mix),
then evaluates every one of them with the project's evaluation core, each in a fresh process
(``qwen3-quant eval``), on the same text and windows: perplexity and KLD against the transformers
fp32 reference, prefill and decode tokens/s with the runtime's KV cache, peak resident memory.
Writes a Markdown report with the numbers and the ratios to the GGUF type of the same bits.

    PYTHONPATH=. python benchmarks/mlx_bench.py --out benchmarks/mlx.md

Artifacts and results.json go to --work (default out/mlx-bench); a rerun reuses the artifacts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("Qwen3-Micro", "Qwen3-Micro-MoE")
# (label, format, options, variant, peer label for the ratios)
ARTIFACTS = (
    ("MLX 4bit", "mlx", {"bits": 4}, "4bit", "GGUF Q4_K_M"),
    ("MLX 8bit", "mlx", {"bits": 8}, "8bit", "GGUF Q8_0"),
    ("GGUF Q4_K_M", "gguf", {"types": ["Q4_K_M"]}, "Q4_K_M", None),
    ("GGUF Q8_0", "gguf", {"types": ["Q8_0"]}, "Q8_0", None),
    ("GPTQ-Int4", "gptq", {"bits": 4}, "W4g128", "GGUF Q4_K_M"),
)


def make(model: str, fmt: str, options: dict, work: Path, calib_samples: int) -> Path:
    from qwen3_quant.formats import get_format
    from qwen3_quant.quantize import quantize
    from qwen3_quant.sources import resolve_model

    f = get_format(fmt)
    opts = dict(options)
    if f.calibrates(f.parse_options(opts)):
        opts["calib_samples"] = calib_samples
    name = f.artifact_name(resolve_model(model).name, f.parse_options(opts))
    out = work / model / name
    quantize(model, fmt, out_dir=out, validate=False, **opts)  # an intact artifact is kept
    return out


def evaluate(folder: Path, variant: str, args, work: Path) -> dict:
    """The evaluation's result, or ``{"error": ...}`` when the runtime failed (a crash included)."""
    out = work / "results" / f"{folder.name}-{variant}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():  # a rerun reuses finished evaluations
        cmd = [sys.executable, "-m", "qwen3_quant", "eval", str(folder), "--variant", variant,
               "--text", args.text, "--ctx", str(args.ctx), "--max-tokens", str(args.max_tokens),
               "--no-speed", "--gate", "ppl=off", "--gate", "kld=off", "--gate", "top1=off",
               "--json-out", str(out)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            why = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
            tail = [ln for ln in (done.stdout + done.stderr).splitlines() if "Error" in ln or "error" in ln]
            print(f"{shlex.join(cmd)} failed ({why})", file=sys.stderr, flush=True)
            return {"error": f"`qwen3-quant eval` failed ({why}{': ' + tail[-1][:200] if tail else ''})"}
    return json.loads(out.read_text())["results"][0]


def speed_rounds(model: str, made: list, args) -> dict[str, dict]:
    """Prefill and decode tokens/s of every artifact, one thread, round-robin: each round times
    each artifact once (a fresh runner each time), so that load on the shared machine falls on
    all of them alike; the median over the rounds. ``{"error": ...}`` for a runtime that failed."""
    import statistics

    from qwen3_quant.eval.evaluate import _tokenize, eval_targets
    from qwen3_quant.eval.runner import open_runner
    from qwen3_quant.sources import resolve_model
    from qwen3_quant.textdata import load_eval_text

    _, text = load_eval_text(args.text)
    prompt = _tokenize(resolve_model(model).path, text, args.prompt_tokens).tolist()
    runs: dict[str, list] = {label: [] for label, *_ in made}
    errors: dict[str, str] = {}
    for _ in range(args.repeats):
        for label, folder, variant, _peer in made:
            if label in errors:
                continue
            target = eval_targets(folder, variant)[0]
            try:
                with open_runner(target.path, ctx=args.ctx, threads=1, runtime=target.runtime) as r:
                    r.generate(prompt[:16], 4)  # warm-up
                    runs[label].append(r.generate(prompt, args.decode_tokens))
            except Exception as e:  # noqa: BLE001 - reported in the table, the other rows go on
                errors[label] = f"{type(e).__name__}: {e}"[:200]
    out = {}
    for label, timings in runs.items():
        if label in errors:
            out[label] = {"speed_error": errors[label]}
        else:
            out[label] = {
                "prefill_tps": statistics.median(g.prefill_tps for g in timings),
                "decode_tps": statistics.median(g.decode_tps for g in timings),
            }
    return out


def weights_bytes(folder: Path, variant: str) -> int:
    from qwen3_quant.artifact import Manifest

    m = Manifest.read(folder)
    return m.bytes_of(m.variants[variant].files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/mlx.md")
    ap.add_argument("--work", default="out/mlx-bench")
    ap.add_argument("--text", default="builtin:pydoc")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    args = ap.parse_args()
    work = Path(args.work)
    load0, t0 = os.getloadavg()[0], time.time()
    rows: dict[str, list[dict]] = {}
    for model in args.models:
        made = [
            (label, make(model, fmt, o, work, args.calib_samples), v, peer)
            for label, fmt, o, v, peer in ARTIFACTS
        ]
        rows[model] = []
        for label, folder, variant, peer in made:
            r = evaluate(folder, variant, args, work)
            rows[model].append({"label": label, "peer": peer, "bytes": weights_bytes(folder, variant), **r})
            print(f"{model} {label}: {r.get('error') or r['perplexity']}", flush=True)
        speeds = speed_rounds(model, made, args)
        for row in rows[model]:
            row.update(speeds[row["label"]])
    (work / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    write_report(rows, args, load0, os.getloadavg()[0], time.time() - t0)


def write_report(rows: dict[str, list[dict]], args, load0: float, load1: float, seconds: float) -> None:
    from qwen3_quant.artifact import library_versions

    v = library_versions(("mlx", "mlx-lm", "llama_cpp_python", "gptqmodel", "transformers", "torch"))
    cmd = "PYTHONPATH=. python benchmarks/mlx_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# MLX benchmark: MLX 4/8-bit vs GGUF Q4_K_M / Q8_0 and GPTQ-Int4 (trained micro models)",
        "",
        f"Reproduce: `{cmd.strip()}`",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load0:.1f} at start, {load1:.1f} at end ({seconds / 60:.0f} min; the machine is shared, "
        "so trust the ratios over the absolute tokens/s). "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
        "",
        f"Scoring: text `{args.text}`, windows of {args.ctx} tokens, first {args.max_tokens} tokens; KLD over the "
        "transformers fp32 reference's top-32; each evaluation in a fresh process (`qwen3-quant eval`). Speed: "
        f"{args.prompt_tokens}-token prompt, {args.decode_tokens} decoded tokens, one thread, {args.repeats} "
        "rounds over all artifacts of the model in turn (interleaved, so that the machine's load falls on all "
        "alike), the median; the ratios to the peer are the speed figures to read. "
        "Size: the variant's weight files. MLX runs on the CPU in float32 (see docs/mlx.md); GGUF in llama.cpp; "
        "GPTQ in transformers with GPTQModel's CPU kernels.",
        "",
    ]
    for model, rs in rows.items():
        by = {r["label"]: r for r in rs}
        base = next((r["base_perplexity"] for r in rs if r.get("base_perplexity")), None)
        lines += [f"## {model} (unquantised ppl {base:.2f})" if base else f"## {model}", ""]
        lines += [
            "| artifact | size | ppl | ppl +% | KLD mean | top-1 | prefill tok/s | decode tok/s | peak RSS "
            "| size / peer | KLD / peer | decode / peer |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rs:
            if r.get("error"):
                lines.append(
                    f"| {r['label']} | {r['bytes'] / 1e6:.2f} MB | did not run: {r['error']} |" + " |" * 9
                )
                continue
            p = by.get(r["peer"]) if r["peer"] else None
            p = p if p and not p.get("error") else None

            def tps(row, key, spec):
                return format(row[key], spec) if row.get(key) is not None else row.get("speed_error", "-")

            def ratio(key, r=r, p=p):
                return f"{r[key] / p[key]:.2f}x" if p and p.get(key) and r.get(key) is not None else ""

            lines.append(
                f"| {r['label']}{' (peer ' + r['peer'] + ')' if p else ''} | {r['bytes'] / 1e6:.2f} MB | "
                f"{r['perplexity']:.2f} | {r['ppl_increase_pct']:+.2f} | {r['kld_mean']:.2e} | "
                f"{r['top1_agreement']:.3f} | {tps(r, 'prefill_tps', '.0f')} | {tps(r, 'decode_tps', '.1f')} | "
                f"{r['peak_rss_bytes'] / 1e6:.0f} MB | {ratio('bytes')} | {ratio('kld_mean')} | {ratio('decode_tps')} |"
            )
        lines.append("")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
