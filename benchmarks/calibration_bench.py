"""Calibration sets against each other on the trained micro models, side by side in one run:

- mixes: the packaged ``default`` (ships with the package), the previous ``shared-default`` (the
  same kinds of sources read whole from the shared data folder; tests/mixes/), and ``builtin``
  (Python's pydoc text, what a fresh clone used to fall back to);
- artifacts: GPTQ-Int4 (group size 128, through qwen3-quant) and GGUF Q4_K_M with an importance
  matrix computed from each mix (plus Q4_K_M without one, for reference);
- scores against the unquantised model on held-out texts none of the mixes calibrates on: the
  Gutenberg book the micro models never saw, GSM8K test conversations with thinking on and with
  thinking off, the second halves of the UDHR texts (60 languages) and HumanEval tasks 140-163:
  perplexity and mean KL divergence (top-32), first ``--max-tokens`` tokens of each, ctx 512;
- MoE expert coverage: calibration tokens the router sends to each expert, per layer, for each
  mix and for ``generated`` (default + conversations the model writes itself); starved = fewer
  than 0.5% of the layer's tokens (GPTQ's default --starved-threshold); plus what writing them cost.

    PYTHONPATH=. QWEN3_QUANT_DATA=../shared/data python benchmarks/calibration_bench.py

Results go to benchmarks/calibration.json as they are measured (a rerun skips what is there) and
benchmarks/calibration.md is written from them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = ("Qwen3-Micro", "Qwen3-Micro-MoE")
MIXES = {
    "default": "default",
    "shared-default": str(ROOT / "tests" / "mixes" / "shared-default.toml"),
    "builtin": "builtin",
}
TEXTS = (
    "held-out book",
    "gsm8k chat thinking",
    "gsm8k chat no-thinking",
    "udhr 2nd halves",
    "humaneval 140-163",
)
RESULTS = ROOT / "benchmarks" / "calibration.json"
NOTES_MARK = "<!-- findings: written by hand, kept when the tables above are regenerated -->\n"


# --- held-out evaluation texts ----------------------------------------------------------------------


def eval_texts(model_dir: Path, work: Path) -> dict[str, Path]:
    from transformers import AutoTokenizer

    from qwen3_quant.textdata import read_text, shared_data_dir, strip_gutenberg

    data = shared_data_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    out: dict[str, str] = {}
    out["held-out book"] = strip_gutenberg(
        read_text(data / "corpus-en/gutenberg/pg43_stevenson_jekyll_and_hyde.txt")
    )
    rows = [json.loads(line) for line in (data / "chat/gsm8k/test.jsonl").open()][:120]
    for thinking in (True, False):
        parts = []
        for r in rows:
            reasoning, _, final = r["answer"].rpartition("####")
            reasoning = " ".join(x for x in reasoning.replace(">>", "<<").split("<<")[::2]).strip()
            msg = {"role": "assistant", "content": f"The answer is {final.strip()}."}
            if thinking:
                msg["reasoning_content"] = reasoning
            else:
                msg["content"] = f"{reasoning}\n\n{msg['content']}"
            conv = [{"role": "user", "content": r["question"]}, msg]
            parts.append(tok.apply_chat_template(conv, tokenize=False, enable_thinking=thinking))
        out["gsm8k chat thinking" if thinking else "gsm8k chat no-thinking"] = "".join(parts)
    udhr = []
    for f in sorted((data / "multilingual/udhr2").glob("*.txt")):
        lines = "\n".join(" ".join(x.split()) for x in read_text(f).splitlines() if x.strip())
        udhr.append(lines[len(lines) // 2 :][:300])
    out["udhr 2nd halves"] = "\n\n".join(udhr)
    with gzip.open(data / "chat/humaneval/HumanEval.jsonl.gz", "rt") as fh:
        tasks = [json.loads(line) for line in fh][140:]
    out["humaneval 140-163"] = "\n\n".join(t["prompt"] + t["canonical_solution"] for t in tasks)
    paths = {}
    for name, text in out.items():
        p = work / f"{model_dir.name}-{name.replace(' ', '_')}.txt"
        p.write_text(text)
        paths[name] = p
    return paths


# --- measuring --------------------------------------------------------------------------------------


def score(artifact: Path, base: Path, texts: dict[str, Path], work: Path, max_tokens: int) -> dict:
    from qwen3_quant.eval.evaluate import EvalOptions, evaluate

    out = {}
    for name, path in texts.items():
        opts = EvalOptions(
            text=str(path), ctx=512, max_tokens=max_tokens, speed=False, threads=1, reference_dir=work / "ref"
        )
        r = evaluate(artifact, base=base, options=opts)
        out[name] = {
            "ppl": r.perplexity,
            "base_ppl": r.base_perplexity,
            "kld": r.kld_mean,
            "tokens": r.tokens_scored,
        }
    return out


def gguf_base(model: str, work: Path) -> Path:
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.gguf.metadata import describe
    from qwen3_quant.formats.gguf.writer import convert
    from qwen3_quant.sources import resolve_model

    f = work / f"{model}-BF16.gguf"
    if not f.is_file():
        src = resolve_model(model)
        convert(inspect_checkpoint(src.path), describe(src, inspect_checkpoint(src.path)), f, out_type="BF16")
    return f


def mix_spec(mix: str, seed: int, work: Path) -> str:
    """The mix as named, or a copy of its file with another sampling seed."""
    if seed == 0:
        return MIXES[mix]
    import tomllib

    from qwen3_quant.calib import load_mix

    path = Path(load_mix(MIXES[mix]).origin)
    data = tomllib.loads(path.read_text())
    out = work / f"{mix}-seed{seed}.toml"
    text = path.read_text().replace(f"seed = {data.get('seed', 0)}", f"seed = {seed}")
    out.write_text(text if "seed =" in text else f"seed = {seed}\n" + text)
    return str(out)


def run_gguf(model: str, mix: str | None, samples: int, work: Path, seed: int = 0) -> Path:
    from qwen3_quant.calib import load_mix
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.gguf.imatrix import collect_imatrix
    from qwen3_quant.formats.gguf.quantizer import quantize_gguf
    from qwen3_quant.sources import resolve_model

    src = resolve_model(model)
    f = work / f"{model}-Q4_K_M-{mix or 'no-imatrix'}-seed{seed}.gguf"
    im = None
    if mix:
        cs = load_mix(mix_spec(mix, seed, work)).build(src.path, samples=samples)
        im = collect_imatrix(inspect_checkpoint(src.path), cs.samples)
    quantize_gguf(gguf_base(model, work), f, "Q4_K_M", imatrix=im)
    return f


def run_gptq(model: str, mix: str, samples: int, work: Path, seed: int = 0) -> Path:
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.gptqmodel.config import GPTQModelConfig
    from qwen3_quant.formats.gptqmodel.quantizer import quantize_artifact
    from qwen3_quant.sources import resolve_model

    src = resolve_model(model)
    cfg = GPTQModelConfig(
        method="gptq", bits=4, sym=True, calib=mix_spec(mix, seed, work), calib_samples=samples
    )
    dest = work / (f"{model}-GPTQ-Int4-{mix}" + (f"-seed{seed}" if seed else ""))
    if not dest.is_dir():
        quantize_artifact(src, inspect_checkpoint(src.path), cfg, dest, fmt="gptq")
    return dest


def coverage(model: str, samples: int, gen_rows: int, work: Path) -> dict:
    """Tokens routed to each expert per MoE layer, for each mix and for default + model-written rows."""
    import torch
    from transformers import AutoModelForCausalLM

    from qwen3_quant.calib import load_mix, parse_mix
    from qwen3_quant.formats.gptqmodel.moe import count_routed_tokens
    from qwen3_quant.sources import resolve_model

    src = resolve_model(model)
    import tomllib

    gen = tomllib.loads((ROOT / "calib" / "generated.toml").read_text())
    for s in gen["source"]:
        if s["kind"] == "generate":
            s["rows"] = gen_rows
    mixes = {name: load_mix(spec) for name, spec in MIXES.items()}
    mixes[f"generated (rows={gen_rows} per thinking mode)"] = parse_mix(gen, origin="calib/generated.toml")
    out: dict = {}
    model_obj = None
    for name, mix in mixes.items():
        t = time.perf_counter()
        cs = mix.build(src.path, samples=samples, cache_dir=work / "cache")
        build_s = time.perf_counter() - t
        if model_obj is None:
            model_obj = AutoModelForCausalLM.from_pretrained(src.path, dtype=torch.float32).eval()
        stats = count_routed_tokens(
            model_obj, cs.samples, threshold=0.005 * cs.n_tokens, threshold_spec="0.5%"
        )
        notes = {k: v for k, v in cs.summary()["sources"].items() if "generated" in v}
        out[name] = {
            "tokens": cs.n_tokens,
            "build_seconds": round(build_s, 1),
            "generated": notes,
            "min_per_layer": [int(c.min()) for c in stats.counts],
            "starved_per_layer": [int((c < stats.threshold).sum()) for c in stats.counts],
            "share_of_busiest_per_layer": [round(float(c.max() / c.sum()), 3) for c in stats.counts],
            "threshold": stats.threshold,
            "experts": stats.num_experts,
            "top_k": stats.top_k,
        }
    return out


# --- the run ------------------------------------------------------------------------------------------


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(res: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--gen-rows", type=int, default=16)
    ap.add_argument("--work", type=Path, default=Path("/tmp/calib-bench"))
    ap.add_argument("--only", choices=("gguf", "gptq", "coverage"), action="append")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument(
        "--seed", type=int, default=0, help="resample every mix with this seed (rows keyed by it)"
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="raw results (the .md goes beside it)")
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite the .md from the results, run nothing"
    )
    args = ap.parse_args()
    if args.report_only:
        write_report(res=load(args.results), path=args.results.with_suffix(".md"))
        return
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: one thread decodes and scores fastest here
    args.work.mkdir(parents=True, exist_ok=True)
    res = load(args.results)
    res.setdefault("meta", {})
    res["meta"].update(
        command="PYTHONPATH=. QWEN3_QUANT_DATA=../shared/data python benchmarks/calibration_bench.py",
        samples=args.samples,
        max_tokens=args.max_tokens,
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start",
        torch=torch.__version__,
    )
    only = set(args.only or ("gguf", "gptq", "coverage"))
    for model in args.models:
        from qwen3_quant.sources import resolve_model

        src = resolve_model(model).path
        texts = eval_texts(src, args.work)
        m = res.setdefault(model, {})
        jobs = []
        if "gguf" in only:
            jobs += [("GGUF Q4_K_M", mix) for mix in (None, *MIXES)]
        if "gptq" in only:
            jobs += [("GPTQ-Int4", mix) for mix in MIXES]
        for kind, mix in jobs:
            key = f"{kind} {'+ imatrix ' if kind.startswith('GGUF') and mix else ''}{mix or 'no imatrix'}"
            if args.seed:
                if not mix:
                    continue  # no calibration, nothing to resample
                key += f" (seed {args.seed})"
            if key in m:
                continue
            t = time.perf_counter()
            art = (
                run_gguf(model, mix, args.samples, args.work, args.seed)
                if kind.startswith("GGUF")
                else run_gptq(model, mix, args.samples, args.work, args.seed)
            )
            q_s = time.perf_counter() - t
            m[key] = {"quantize_seconds": round(q_s, 1), **score(art, src, texts, args.work, args.max_tokens)}
            save(res, args.results)
            print(f"{model} {key}: done in {time.perf_counter() - t:.0f} s", flush=True)
        if "coverage" in only and "MoE" in model and "coverage" not in m:
            m["coverage"] = coverage(model, args.samples, args.gen_rows, args.work)
            save(res, args.results)
    res["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    save(res, args.results)
    write_report(res, args.results.with_suffix(".md"))


def write_report(res: dict, path: Path) -> None:
    """The tables from ``res``; the hand-written findings below NOTES_MARK in ``path`` are kept."""
    notes = (
        path.read_text().split(NOTES_MARK, 1)[1] if path.is_file() and NOTES_MARK in path.read_text() else ""
    )
    path.write_text(report(res) + ("\n" + NOTES_MARK + notes if notes else ""))


def report(res: dict) -> str:
    meta = res["meta"]
    lines = [
        "# Calibration sets: packaged default vs the previous shared-data mix vs pydoc (micro models)",
        "",
        f"Command: `{meta['command']}`; the `(seed 1)` rows: the same with "
        f"`{meta.get('seed_args', '--seed 1 --only gguf --only gptq')}`.",
        "",
        f"Run: {meta.get('finished', '(partial)')}, {meta['machine']}; torch {meta['torch']}. Calibration: "
        f"{meta['samples']} samples x 512 tokens per mix. Scoring: ctx 512, the first {meta['max_tokens']} tokens "
        "of each held-out text, KLD over the reference's top-32, against the unquantised model "
        "(reference: transformers, fp32; GGUF scored in llama.cpp through the project's runner, which keeps weights "
        "out of llama.cpp's AMX buffers on a CPU that has AMX, as this one does: they crash there; GPTQ in "
        "transformers + GPTQModel's CPU kernels).",
        "",
    ]
    lines += [
        "How to read it:",
        "",
        "- `default` is what ships with the package; `shared-default` is the previous default mix (the same kinds of "
        "sources, read whole from the shared test-data folder, tests/mixes/shared-default.toml); `builtin` is "
        "Python's pydoc text, what a fresh clone used to fall back to. Both `default` and `shared-default` are "
        "sampled by the same code (rows packed to 512 tokens).",
        "- Held out: `default` never saw any of the evaluation texts. `shared-default` did see two of them: it "
        "reads the whole UDHR files (their second halves are the `udhr` text) and all 164 HumanEval tasks "
        "(140-163 are the `humaneval` text), so its numbers on those two texts are not held-out.",
        "- The micro models are English-only (a byte-level BPE trained on Gutenberg): perplexity on the UDHR "
        "text is huge, but KLD against the unquantised model still measures what quantisation changed.",
        "- One calibration draw per row; rows marked `(seed 1)` redraw every mix with another seed, which shows "
        "how much of a difference between mixes is the draw.",
        "- Expert coverage: the micro MoE's router never picks some experts at all under any of the mixes "
        "(0 tokens); no calibration set reaches those, and GPTQ quantises them by round-to-nearest (the "
        "default `--starved-experts rtn`).",
        "",
    ]
    for model in MODELS:
        m = res.get(model)
        if not m:
            lines += [f"## {model}", "", "Not measured in this run.", ""]
            continue
        rows = {k: v for k, v in m.items() if k != "coverage"}
        lines += [f"## {model}", ""]
        if rows:
            first = next(iter(rows.values()))
            texts = [t for t in TEXTS if t in first]
            lines.append(
                "Unquantised ppl: " + ", ".join(f"{t} {first[t]['base_ppl']:.1f}" for t in texts) + "."
            )
            lines += ["", "| artifact | " + " | ".join(f"{t} KLD" for t in texts) + " | " + " | ".join(
                f"{t} ppl" for t in texts) + " |"]  # fmt: skip
            lines.append("|---|" + "---:|" * (2 * len(texts)))
            for key, r in rows.items():
                lines.append(
                    f"| {key} | " + " | ".join(f"{r[t]['kld']:.2e}" for t in texts) + " | "
                    + " | ".join(f"{r[t]['ppl']:.1f}" for t in texts) + " |"
                )  # fmt: skip
            lines.append("")
            lines += _ratios(rows, texts)
        cov = m.get("coverage")
        if cov:
            any_ = next(iter(cov.values()))
            lines += [
                "",
                f"### Expert coverage ({any_['experts']} experts, top-{any_['top_k']}; starved = fewer than 0.5% "
                "of the layer's tokens)",
                "",
                "| calibration | tokens | starved experts per layer | fewest tokens per expert, per layer | "
                "busiest expert's share per layer | build s |",
                "|---|---:|---|---|---|---:|",
            ]
            if meta.get("coverage_from"):
                lines[-2:-2] = [meta["coverage_from"], ""]
            for name, c in cov.items():
                lines.append(
                    f"| {name} | {c['tokens']} | {c['starved_per_layer']} | {c['min_per_layer']} | "
                    f"{c['share_of_busiest_per_layer']} | {c['build_seconds']} |"
                )
            for name, c in cov.items():
                for src, g in c["generated"].items():
                    lines.append(
                        f"\n`{src}` ({name}): the model wrote {g['generated']} of {g['of']} conversations in "
                        f"{g['seconds']} s (0 s: read from the cache)."
                    )
        lines.append("")
    return "\n".join(lines) + "\n"


def _ratios(rows: dict, texts: list[str]) -> list[str]:
    import re

    out = []
    seeds = sorted({m.group(0) for k in rows if (m := re.search(r" \(seed \d+\)$", k))})
    for suffix in ["", *seeds]:
        for kind in ("GGUF Q4_K_M + imatrix", "GPTQ-Int4"):
            ref = rows.get(f"{kind} default{suffix}")
            if not ref:
                continue
            for other in ("shared-default", "builtin"):
                r = rows.get(f"{kind} {other}{suffix}")
                if r:
                    out.append(
                        f"- {kind}{suffix or ' (seed 0)'}: KLD of `default` / `{other}`: "
                        + ", ".join(f"{t} {ref[t]['kld'] / r[t]['kld']:.2f}x" for t in texts)
                    )
    return out + ["", "(below 1.00x: the packaged default calibrates better on that text)"] if out else out


if __name__ == "__main__":
    main()
