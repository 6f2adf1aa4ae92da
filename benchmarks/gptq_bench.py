"""GPTQ and AWQ (through qwen3-quant) against round-to-nearest, calibration mixes against each other,
and our command's overhead against a bare GPTQModel script, on the trained micro models.

    PYTHONPATH=. python benchmarks/gptq_bench.py --samples 32

One run does everything and writes benchmarks/gptq.md (report) and benchmarks/gptq_results.json (raw).

- Quality: every artifact is reloaded in transformers + GPTQModel's CPU kernels (the serving path)
  and scored on the fixed protocol against the unquantised model: perplexity, mean KL divergence
  of the top-32 distribution, top-1 agreement, on two texts: the Gutenberg book the micro models
  did not train on (Jekyll and Hyde) and GSM8K test conversations rendered through the model's
  chat template, thinking on and off.
- RTN is GPTQModel's own round-to-nearest (RTNConfig) at the same bits and group size, packed in
  the same GPTQ format and served by the same kernels: only the weight rounding differs.
- Overhead: `qwen3-quant quantize ... --no-validate` against `bare` (this file's bare mode: load the
  same calibration token ids from JSON, GPTQModel.load / quantize / save, nothing else), same
  config; wall time and peak RSS of the whole process tree, alternated, median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# --- bare GPTQModel: the peer of `qwen3-quant quantize` ---------------------------------------------


def bare(args) -> None:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.quantization.config import AWQConfig, GPTQConfig

    samples = json.loads(Path(args.calib).read_text())
    common = {"bits": args.bits, "group_size": 128, "offload_to_disk": False}
    if args.method == "awq":
        qc = AWQConfig(sym=False, **common)
    else:
        qc = GPTQConfig(sym=True, desc_act=False, **common)
    model = GPTQModel.load(args.src, qc, device="cpu")
    kw = {"backend": BACKEND.AWQ_TORCH} if args.method == "awq" else {}
    model.quantize([{"input_ids": s, "attention_mask": [1] * len(s)} for s in samples], batch_size=1, **kw)
    model.save(args.out)


# --- measuring -------------------------------------------------------------------------------------


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Wall time and peak RSS summed over the process and its children (sampled every 50 ms)."""
    import psutil

    peak = 0
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}); see {log}")
    return {"wall_s": wall, "peak_rss_mb": peak / 2**20}


def held_out_book(out: Path) -> Path:
    """The Gutenberg book the micro models did not train on, without Gutenberg's header and footer."""
    from qwen3_quant.textdata import read_text, shared_data_dir, strip_gutenberg

    book = shared_data_dir() / "corpus-en/gutenberg/pg43_stevenson_jekyll_and_hyde.txt"
    out.write_text(strip_gutenberg(read_text(book)))
    return out


def gsm8k_chat_text(model_dir: Path, out: Path, n: int = 60) -> Path:
    """GSM8K test conversations through the model's chat template, half with thinking on."""
    from transformers import AutoTokenizer

    from qwen3_quant.textdata import shared_data_dir

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in (shared_data_dir() / "chat/gsm8k/test.jsonl").open()][:n]
    parts = []
    for i, r in enumerate(rows):
        reasoning, _, final = r["answer"].rpartition("####")
        thinking = i % 2 == 0
        msg = {"role": "assistant", "content": final.strip()}
        if thinking:
            msg["reasoning_content"] = reasoning.strip()
        else:
            msg["content"] = f"{reasoning.strip()}\n\nThe answer is {final.strip()}."
        parts.append(
            tok.apply_chat_template(
                [{"role": "user", "content": r["question"]}, msg], tokenize=False, enable_thinking=thinking
            )
        )
    out.write_text("".join(parts))
    return out


# --- the benchmark ---------------------------------------------------------------------------------


def quantize_one(
    model: str, method: str, bits: int, mix: str, samples: int, out: Path, sym: bool | None = None
) -> Path:
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.gptqmodel.config import GPTQModelConfig
    from qwen3_quant.formats.gptqmodel.quantizer import quantize_artifact
    from qwen3_quant.sources import resolve_model

    src = resolve_model(model)
    sym = method != "awq" if sym is None else sym
    cfg = GPTQModelConfig(method=method, bits=bits, sym=sym, calib=mix, calib_samples=samples)
    dest = out / f"{src.name}{cfg.name_suffix()}-{mix}-n{samples}"
    quantize_artifact(src, inspect_checkpoint(src.path), cfg, dest, fmt=method if method != "rtn" else "gptq")
    return dest


def score(artifact: Path, texts: dict[str, str], speed: bool, max_tokens: int = 16384) -> dict[str, dict]:
    from qwen3_quant.eval.evaluate import EvalOptions, evaluate

    out = {}
    for name, text in texts.items():
        r = evaluate(
            artifact,
            options=EvalOptions(
                text=text, ctx=512, max_tokens=max_tokens, speed=speed and name == "held-out book", repeats=2
            ),
        )
        out[name] = {
            "ppl": r.perplexity,
            "base_ppl": r.base_perplexity,
            "ppl_increase_pct": r.ppl_increase_pct,
            "kld_mean": r.kld_mean,
            "top1": r.top1_agreement,
            "tokens_scored": r.tokens_scored,
            "decode_tps": r.decode_tps,
            "prefill_tps": r.prefill_tps,
        }
    return out


def overhead(model: str, method: str, samples: int, work: Path, repeats: int) -> dict:
    from qwen3_quant.calib import load_mix
    from qwen3_quant.sources import resolve_model

    src = resolve_model(model)
    tokens = load_mix("default").build(src.path, samples=samples).samples
    calib = work / f"{src.name}-calib.json"
    calib.write_text(json.dumps(tokens))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPTQMODEL_CPU_WORKERS": "2", "HF_HUB_OFFLINE": "1"}
    ours_cmd = [
        sys.executable,
        "-c",
        "from qwen3_quant.cli import main; main()",
        "quantize",
        model,
        "--format",
        method,
        "--bits",
        "4",
        "--calib-samples",
        str(samples),
        "--no-validate",
        "--overwrite",
        "-o",
        str(work / f"ours-{src.name}-{method}"),
    ]
    bare_cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "bare",
        "--src",
        str(src.path),
        "--method",
        method,
        "--bits",
        "4",
        "--calib",
        str(calib),
        "--out",
        str(work / f"bare-{src.name}-{method}"),
    ]
    runs: dict[str, list[dict]] = {"ours": [], "bare": []}
    for i in range(repeats):
        order = (
            [("ours", ours_cmd), ("bare", bare_cmd)]
            if i % 2 == 0
            else [("bare", bare_cmd), ("ours", ours_cmd)]
        )
        for name, cmd in order:
            runs[name].append(measure(cmd, env, work / f"{name}-{src.name}-{method}-{i}.log"))
            print(f"  {name} {src.name} {method}: {runs[name][-1]}", flush=True)
    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "peak_rss_mb")} for k, v in runs.items()
    }
    return {
        "model": src.name,
        "method": method,
        "samples": samples,
        "runs": runs,
        "median": med,
        "wall_ratio": med["ours"]["wall_s"] / med["bare"]["wall_s"],
        "rss_ratio": med["ours"]["peak_rss_mb"] / med["bare"]["peak_rss_mb"],
    }


# label -> (method, bits, symmetric). RTN both ways: symmetric like GPTQ's default, asymmetric (zero
# points) like AWQ's, so each method is compared with round-to-nearest of its own layout.
QUALITY_ROWS = {
    "RTN-Int4": ("rtn", 4, True),
    "RTN-Int4-asym": ("rtn", 4, False),
    "GPTQ-Int4": ("gptq", 4, True),
    "AWQ-Int4": ("awq", 4, False),
    "RTN-Int8": ("rtn", 8, True),
    "GPTQ-Int8": ("gptq", 8, True),
    "AWQ-Int8": ("awq", 8, False),
}


def fmt(x, nd=3):
    return "n/a" if x is None else f"{x:.{nd}f}"


NOTES = """## Notes

- RTN rows are GPTQModel's `RTNConfig` (symmetric, like the GPTQ rows); AWQ rows use zero points
  (asymmetric), the AWQ default. All rows at group size 128, same kernels per format.
- AWQ-Int8 is measured here only as the evidence for refusing it: GPTQModel 7.6's 8-bit AWQ leaves
  about one output channel in eight with 30-50% weight error. `qwen3-quant` offers AWQ at 4 bits.
- Qwen3-Micro-MoE AWQ rows include the router rescaling qwen3-quant applies after GPTQModel (see
  docs/gptq-awq.md); without it AWQ-Int4 was 3.8x worse than RTN-Int4 on the held-out book.
- The mixes have the same number of samples, not of tokens: GSM8K conversations are shorter than
  512 tokens, so `chat` calibrates on fewer tokens (see the tokens column).
- Overhead: ours includes building the calibration set from the mix (tokenizer, chat template),
  the MoE routing count (Qwen3-Micro-MoE: one extra forward pass of the unquantised model), the
  float16 export with its layout check, and the manifest. Its memory overhead is the CLI process
  (Python, torch, tokenizer: about 300 MB) living beside the GPTQModel worker: a constant, large
  against a 5-11M-parameter model and small against a real one.
- The machine was shared with other jobs during the run: wall times are indicative; each pair
  ran alternately, so both sides saw similar load."""


def kld(x):
    return "n/a" if x is None else f"{x:.2e}"


def report(res: dict, path: Path, command: str) -> None:
    lines = [
        "# GPTQ / AWQ benchmark (trained micro models)",
        "",
        f"Command: `{command}`",
        "",
        f"Run: {res['date']}, {res['host']}; {res['versions']}. Calibration: {res['samples']} samples x 512 tokens "
        "per mix. Scoring: reloaded through transformers + GPTQModel CPU kernels (fp32 activations), "
        "ctx 512, first 16384 tokens of each text, KLD over the reference's top-32.",
        "",
        "## Quality: GPTQ and AWQ against round-to-nearest (group size 128, default mix)",
        "",
    ]
    for model, rows in res["quality"].items():
        texts = list(next(iter(rows.values()))["scores"])
        base = {t: next(iter(rows.values()))["scores"][t]["base_ppl"] for t in texts}
        lines += [
            f"### {model} (unquantised ppl: " + ", ".join(f"{t} {base[t]:.2f}" for t in texts) + ")",
            "",
            "| artifact | " + " | ".join(f"{t} ppl | {t} ppl +% | {t} KLD | {t} top-1" for t in texts) + " |",
            "|---|" + "---:|" * (4 * len(texts)),
        ]
        for name, r in rows.items():
            cells = []
            for t in texts:
                s = r["scores"][t]
                cells += [
                    fmt(s["ppl"], 2),
                    fmt(s["ppl_increase_pct"], 2),
                    kld(s["kld_mean"]),
                    fmt(s["top1"], 3),
                ]
            label = f"{name} (not offered: see notes)" if name == "AWQ-Int8" else name
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("KLD ratio to RTN at the same bits (lower is better): ")
        for bits in (4, 8):
            rtn = rows.get(f"RTN-Int{bits}")
            if not rtn:
                continue
            parts = []
            for meth in ("GPTQ", "AWQ"):
                r = rows.get(f"{meth}-Int{bits}")
                if r:
                    parts.append(
                        f"{meth} "
                        + ", ".join(
                            f"{t} {r['scores'][t]['kld_mean'] / rtn['scores'][t]['kld_mean']:.2f}x"
                            for t in texts
                        )
                    )
            lines.append(f"- {bits}-bit: " + "; ".join(parts))
        lines.append("")
    lines += ["## Calibration mixes (GPTQ-Int4)", ""]
    for model, rows in res["mixes"].items():
        texts = list(next(iter(rows.values()))["scores"])
        lines += [
            f"### {model}",
            "",
            "| mix | tokens | " + " | ".join(f"{t} ppl +% | {t} KLD | {t} top-1" for t in texts) + " |",
            "|---|---:|" + "---:|" * (3 * len(texts)),
        ]
        for mix, r in rows.items():
            cells = []
            for t in texts:
                s = r["scores"][t]
                cells += [fmt(s["ppl_increase_pct"], 2), kld(s["kld_mean"]), fmt(s["top1"], 3)]
            lines.append(f"| {mix} | {r['tokens']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Overhead: `qwen3-quant quantize --no-validate` against a bare GPTQModel script",
        "",
        "Same model, config and calibration token ids; wall time and peak RSS of the whole process tree "
        f"(ours: CLI + worker process), median of {res['repeats']} alternated runs each.",
        "",
        "| model | method | ours wall s | bare wall s | wall ratio | ours peak MB | bare peak MB | RSS ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for o in res["overhead"]:
        m = o["median"]
        lines.append(
            f"| {o['model']} | {o['method']} | {m['ours']['wall_s']:.1f} | {m['bare']['wall_s']:.1f} | "
            f"{o['wall_ratio']:.2f} | {m['ours']['peak_rss_mb']:.0f} | {m['bare']['peak_rss_mb']:.0f} | {o['rss_ratio']:.2f} |"
        )
    lines += ["", NOTES, ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode")
    b = sub.add_parser("bare")
    for a in ("--src", "--method", "--calib", "--out"):
        b.add_argument(a, required=True)
    b.add_argument("--bits", type=int, default=4)
    r = sub.add_parser("report", help="rewrite the report from the results JSON of an earlier run")
    r.add_argument(
        "--command", default="PYTHONPATH=. python benchmarks/gptq_bench.py --samples 32 --repeats 2"
    )
    ap.add_argument("--models", default="Qwen3-Micro,Qwen3-Micro-MoE")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qwen3-quant-gptq-bench"))
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "gptq.md")
    ap.add_argument(
        "--quality-only", action="store_true", help="only the quality table (no mixes, no overhead)"
    )
    ap.add_argument("--only-bits", type=int, help="only the quality rows at these bits")
    ap.add_argument("--rows", help="only these quality rows, e.g. RTN-Int4-asym,AWQ-Int4")
    ap.add_argument("--max-tokens", type=int, default=16384, help="tokens of each text scored")
    args = ap.parse_args()
    if args.mode == "bare":
        return bare(args)
    if args.mode == "report":
        res = json.loads(args.report.with_name(args.report.stem + "_results.json").read_text())
        return report(res, args.report, args.command)

    import logging

    logging.basicConfig(level=logging.WARNING)
    from qwen3_quant.artifact import library_versions

    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QWEN3_QUANT_CACHE", str(args.work / "cache"))
    res: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "versions": ", ".join(
            f"{k} {v}" for k, v in library_versions(("gptqmodel", "transformers", "torch")).items()
        ),
        "samples": args.samples,
        "repeats": args.repeats,
        "quality": {},
        "mixes": {},
        "overhead": [],
    }
    from qwen3_quant.sources import resolve_model

    for model in args.models.split(","):
        src = resolve_model(model)
        texts = {
            "held-out book": str(held_out_book(args.work / "jekyll-and-hyde.txt")),
            "gsm8k-chat": str(gsm8k_chat_text(src.path, args.work / f"{model}-chat.txt")),
        }
        rows = {}
        for label, (method, bits, sym) in QUALITY_ROWS.items():
            if args.only_bits and bits != args.only_bits or args.rows and label not in args.rows.split(","):
                continue
            t0 = time.perf_counter()
            art = quantize_one(model, method, bits, "default", args.samples, args.work / "art", sym=sym)
            took = time.perf_counter() - t0
            rows[label] = {
                "artifact": str(art),
                "seconds": took,
                "scores": score(art, texts, False, args.max_tokens),
            }
            print(model, label, f"{took:.0f}s", rows[label]["scores"], flush=True)
        res["quality"][model] = rows
        if args.quality_only:
            args.report.with_name(args.report.stem + "_results.json").write_text(json.dumps(res, indent=1))
            continue
        mixes = {}
        for mix in ("text", "chat", "default"):
            art = quantize_one(model, "gptq", 4, mix, args.samples, args.work / "art")
            m = json.loads((art / "qwen3_quant.json").read_text())
            mixes[mix] = {
                "tokens": m["variants"]["W4g128"]["recipe"]["calibration"]["tokens"],
                "scores": score(art, texts, False),
            }
            print(model, "mix", mix, mixes[mix], flush=True)
        res["mixes"][model] = mixes
        for method in ("gptq", "awq"):
            res["overhead"].append(overhead(model, method, args.samples, args.work, args.repeats))
        args.report.with_name(args.report.stem + "_results.json").write_text(json.dumps(res, indent=1))
    command = "PYTHONPATH=. python benchmarks/gptq_bench.py " + " ".join(sys.argv[1:])
    report(res, args.report, command.strip())
    args.report.with_name(args.report.stem + "_results.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
