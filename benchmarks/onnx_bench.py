"""ONNX (onnxruntime) against transformers fp32 and GGUF (llama.cpp) on the micro models, in one run.

For each model: builds fp32 / int8 / int4 ONNX artifacts with qwen3-quant, the Q8_0 and Q4_K_M GGUF
peers (qwen3-quant's gguf format, no importance matrix), then evaluates every one of them, each
in a fresh process, with the project's evaluation core: perplexity and KLD against the
transformers fp32 reference on the same text, prefill and decode tokens/s with the runtime's KV
cache (llama.cpp: the project's runner), peak resident memory. Writes a Markdown report with the numbers and the ratios.

    python benchmarks/onnx_bench.py --out benchmarks/onnx.md

(from the repository root, with qwen3-quant importable). Artifacts, logs and results.json
go to --work (default out/onnx-bench); a rerun reuses the artifacts and the stored reference.
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
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve()
GGUF_TYPES = ("Q8_0", "Q4_K_M")
ONNX_PRECISIONS = ("fp32", "int8", "int4")
PEERS = {"int8": "Q8_0", "int4": "Q4_K_M"}
NOTES_MARK = "<!-- notes: kept when the tables above are regenerated -->\n"


def eval_one(spec: dict) -> dict:
    """Child process: evaluate one target's quality, return the EvalResult as a dict."""
    from qwen3_quant.eval.evaluate import EvalOptions, EvalTarget, evaluate

    opts = EvalOptions(**spec["options"], speed=False)
    target = EvalTarget(Path(spec["path"]), spec["runtime"], spec.get("variant"), None)
    load = os.getloadavg()[0]
    res = asdict(evaluate(target, base=spec["base"], options=opts))
    res["load_1min"] = (load + os.getloadavg()[0]) / 2
    return res


def speed_rounds(spec: dict) -> dict[str, dict]:
    """Child process: prefill and decode speed of every target of one model, one thread, in
    ``repeats`` rounds that time each target once in turn (a fresh runner each time), so that the
    load of the shared machine falls on all of them alike; the median over the rounds, both per
    CPU-second of this process and per wall-clock second."""
    import statistics

    from qwen3_quant.eval.evaluate import _tokenize
    from qwen3_quant.eval.runner import open_runner
    from qwen3_quant.textdata import load_eval_text

    _, text = load_eval_text(spec["text"])
    ids = _tokenize(Path(spec["base"]), text, spec["prompt_tokens"]).tolist()
    n_dec = spec["decode_tokens"]
    runs: dict[str, dict[str, list]] = {label: {} for label, _, _ in spec["targets"]}
    for _ in range(spec["repeats"]):
        for label, path, runtime in spec["targets"]:
            with open_runner(Path(path), ctx=spec["ctx"], threads=1, runtime=runtime) as runner:
                runner.generate(ids[:16], 4)  # warm-up
                c0, w0 = time.process_time(), time.perf_counter()
                runner.generate(ids, 1)
                c1, w1 = time.process_time(), time.perf_counter()
                runner.generate(ids, n_dec)
                c2, w2 = time.process_time(), time.perf_counter()
            r = runs[label]
            r.setdefault("cpu_prefill_tps", []).append(len(ids) / (c1 - c0))
            r.setdefault("cpu_decode_tps", []).append((n_dec - 1) / max(1e-9, (c2 - c1) - (c1 - c0)))
            r.setdefault("prefill_tps", []).append(len(ids) / (w1 - w0))
            r.setdefault("decode_tps", []).append((n_dec - 1) / max(1e-9, (w2 - w1) - (w1 - w0)))
    return {label: {k: statistics.median(v) for k, v in r.items()} for label, r in runs.items()}


def child(flag: str, spec: dict, env: dict, log) -> dict:
    r = subprocess.run(
        [sys.executable, str(HERE), flag, json.dumps(spec)], env=env, capture_output=True, text=True
    )
    log.write(r.stderr)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise SystemExit(f"{flag} {spec.get('path', '')} failed:\n{r.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


# --- building the artifacts -------------------------------------------------------------------------
def build_onnx(src: Path, name: str, work: Path) -> dict[str, Path]:
    from qwen3_quant.quantize import quantize

    out = {}
    for p in ONNX_PRECISIONS:
        dest = work / f"{name}-ONNX-{p}"
        if not dest.is_dir():
            quantize(str(src), "onnx", out_dir=dest, precision=p, validate=False)
        out[p] = dest
    return out


def build_gguf(src: Path, name: str, work: Path) -> dict[str, Path]:
    """The GGUF peers, made by qwen3-quant's gguf format without an importance matrix (plain
    round-to-nearest K-quants, like the ONNX int artifacts, which see no calibration data)."""
    from qwen3_quant.artifact import load_manifest
    from qwen3_quant.quantize import quantize

    dest = work / f"{name}-GGUF"
    if not dest.is_dir():
        quantize(str(src), "gguf", out_dir=dest, types=list(GGUF_TYPES), imatrix=False, validate=False)
    m = load_manifest(dest)
    return {t: dest / m["variants"][t]["files"][0] for t in GGUF_TYPES}


def held_out_text(src: Path, work: Path) -> str | None:
    """The Gutenberg book the micro models were not trained on, if the shared data is here."""
    from qwen3_quant.textdata import read_text, shared_data_dir, strip_gutenberg

    info = src / "training.json"
    d = shared_data_dir(required=False)
    book = json.loads(info.read_text()).get("held_out_book") if info.is_file() else None
    if not d or not book or not (d / "corpus-en" / "gutenberg" / f"{book}.txt").is_file():
        return None
    out = work / f"{book}.txt"
    if not out.is_file():
        out.write_text(strip_gutenberg(read_text(d / "corpus-en" / "gutenberg" / f"{book}.txt")))
    return str(out)


def size_of(path: Path) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum((p / f).stat().st_size for f in ("model.onnx", "model.onnx.data") if (p / f).is_file()) or sum(
        f.stat().st_size for f in p.glob("*.safetensors")
    )


# --- the report -----------------------------------------------------------------------------------
def _f(v, spec=".2f"):
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def report(runs: dict, meta: dict) -> str:
    lines = [
        "# ONNX (onnxruntime) vs transformers fp32 vs GGUF (llama.cpp) on the micro models",
        "",
        "Reproduce with:",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- Date: {meta['date']}; machine: {meta['host']}; load average at start / end: "
        f"{meta['load_start']} / {meta['load_end']} (other work shared the machine: speeds are rough)",
        f"- Libraries: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        f"- Text: {meta['text']} ({meta['tokens']} tokens scored in windows of {meta['ctx']}); speed: "
        f"prompt {meta['prompt_tokens']} tokens, {meta['decode_tokens']} decoded greedily with the KV cache, "
        f"one thread, {meta['repeats']} rounds that time every artifact of the model once in turn (interleaved, "
        "a fresh runner each time, after a warm-up), the median",
        "- Speed is given twice: tokens per CPU-second of the timing process (the ratios use these) and "
        "wall-clock tokens/s. The machine was shared with other jobs: both move with the neighbours (CPU time "
        "less), so read the ratios between rows of one model, which the interleaving keeps comparable, not the "
        "absolute figures. Load during the speed rounds: "
        + ", ".join(f"{m} {v}" for m, v in meta.get("speed_load", {}).items()),
        "- GGUF peers made with qwen3-quant's gguf format, no importance matrix; evaluated in the project's "
        "llama.cpp runner (on a CPU with AMX it keeps weights out of llama.cpp's AMX buffers, which crash here)",
        "- Each artifact's quality is evaluated in a fresh process; peak RSS is that process's peak (libraries "
        "included); load: the machine's 1-minute load average while it ran (2 cores: above 2, other jobs took "
        "CPU time).",
        "- Sizes: the files a runtime loads (ONNX: model.onnx + model.onnx.data; transformers: the bf16 "
        "safetensors it upcasts to fp32).",
        "- KLD: mean over scored tokens of KL(reference || artifact) on the reference's top-32 log-probs "
        "(the project's protocol); top-1: share of tokens whose most likely next token matches the reference.",
        "",
    ]
    for model, rows in runs.items():
        base = rows["transformers fp32"]
        lines += [
            f"## {model}",
            "",
            "| artifact | runtime | size MB | ppl | ppl +% | KLD mean | top-1 | prefill tok/CPU-s | decode tok/CPU-s "
            "| prefill x tf | decode x tf | decode x GGUF peer | prefill tok/s (wall) | decode tok/s (wall) "
            "| peak RSS MB | load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, r in rows.items():
            peer = None
            if label.startswith("ONNX "):
                p = PEERS.get(label.split()[1])
                peer = rows.get(f"GGUF {p}") if p else None
            peer_cell = "-"
            if peer:
                peer_cell = _f(r["cpu_decode_tps"] / peer["cpu_decode_tps"]) + f" ({label_of(peer, rows)})"
            cells = [
                label,
                r["runtime"],
                _f(r["size_bytes"] / 1e6),
                _f(r["perplexity"]),
                _f(r["ppl_increase_pct"]),
                _f(r["kld_mean"], ".4f"),
                _f(r["top1_agreement"], ".3f"),
                _f(r["cpu_prefill_tps"], ".0f"),
                _f(r["cpu_decode_tps"], ".0f"),
                _f(r["cpu_prefill_tps"] / base["cpu_prefill_tps"]),
                _f(r["cpu_decode_tps"] / base["cpu_decode_tps"]),
                peer_cell,
                _f(r["prefill_tps"], ".0f"),
                _f(r["decode_tps"], ".0f"),
                _f(r["peak_rss_bytes"] / 1e6, ".0f"),
                _f(r.get("load_1min"), ".1f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def label_of(row, rows):
    return next(k for k, v in rows.items() if v is row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["Qwen3-Micro", "Qwen3-Micro-MoE"])
    ap.add_argument("--work", type=Path, default=Path("out/onnx-bench"))
    ap.add_argument("--out", type=Path, default=HERE.parent / "onnx.md")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    # quality scoring threads; speed is always timed on one thread: on a shared machine
    # multi-threaded runtimes stall whenever another job takes one of their cores
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-one", help=argparse.SUPPRESS)
    ap.add_argument("--speed-rounds", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.eval_one:
        print("RESULT " + json.dumps(eval_one(json.loads(args.eval_one)), default=str))
        return
    if args.speed_rounds:
        print("RESULT " + json.dumps(speed_rounds(json.loads(args.speed_rounds))))
        return

    from importlib import metadata

    from qwen3_quant.artifact import host_description
    from qwen3_quant.sources import resolve_model

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, QWEN3_QUANT_CACHE=str(work / "cache"), TOKENIZERS_PARALLELISM="false")
    command = "python benchmarks/onnx_bench.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    meta = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": host_description() + f", {platform.processor() or platform.machine()}",
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "versions": {
            d: metadata.version(d)
            for d in ("onnxruntime", "onnxruntime-genai", "llama_cpp_python", "torch", "transformers")
        },
        "ctx": args.ctx,
        "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens,
        "repeats": args.repeats,
        "threads": args.threads,
    }
    runs: dict[str, dict[str, dict]] = {}
    with open(work / "build.log", "a") as log:
        for model in args.models:
            src = resolve_model(model).path
            print(f"[{model}] building artifacts", flush=True)
            onnx_dirs = build_onnx(src, model, work)
            ggufs = build_gguf(src, model, work)
            text = held_out_text(src, work)
            options = {
                "text": text,
                "ctx": args.ctx,
                "max_tokens": args.max_tokens,
                "prompt_tokens": args.prompt_tokens,
                "decode_tokens": args.decode_tokens,
                "repeats": args.repeats,
                "threads": args.threads,
            }
            targets = [("transformers fp32", src, "transformers")]
            targets += [(f"ONNX {p}", d, "onnxruntime") for p, d in onnx_dirs.items()]
            targets += [(f"GGUF {t}", f, "llama.cpp") for t, f in ggufs.items()]
            rows = {}
            for label, path, runtime in targets:
                cached = work / "evals" / f"{model}-{label.replace(' ', '_')}.json"
                if cached.is_file():  # a rerun keeps finished quality evaluations
                    rows[label] = json.loads(cached.read_text())
                    continue
                print(f"[{model}] evaluating {label}", flush=True)
                spec = {"path": str(path), "runtime": runtime, "base": str(src), "options": options}
                rows[label] = child("--eval-one", spec, env, log)
                rows[label]["size_bytes"] = size_of(path)
                cached.parent.mkdir(exist_ok=True)
                cached.write_text(json.dumps(rows[label], default=str))
            print(f"[{model}] speed, {args.repeats} interleaved rounds", flush=True)
            spec = {
                "targets": [(label, str(path), runtime) for label, path, runtime in targets],
                "base": str(src),
                "text": text,
                "ctx": args.ctx,
                "prompt_tokens": args.prompt_tokens,
                "decode_tokens": args.decode_tokens,
                "repeats": args.repeats,
            }
            load = os.getloadavg()[0]
            for label, speed in child("--speed-rounds", spec, env, log).items():
                rows[label].update(speed)
            meta.setdefault("speed_load", {})[model] = round((load + os.getloadavg()[0]) / 2, 1)
            runs[model] = rows
            meta["text"], meta["tokens"] = (
                rows["transformers fp32"]["text"],
                rows["transformers fp32"]["tokens_scored"],
            )
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    (work / "results.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2, default=str))
    notes = ""
    if args.out.is_file() and NOTES_MARK in args.out.read_text():  # hand-written reading of the numbers
        notes = args.out.read_text().split(NOTES_MARK, 1)[1]
    args.out.write_text(report(runs, meta) + "\n" + NOTES_MARK + notes)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
