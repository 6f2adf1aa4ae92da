"""GGUF benchmark on the bundled micro models, one run, side by side:

1. conversion (HF safetensors -> BF16 GGUF): qwen3-quant's streaming writer against llama.cpp's own
   ``convert_hf_to_gguf.py`` (from the llama-cpp-python sdist; used here only, never shipped):
   wall time, CPU time and peak RSS, each in a fresh process, and whether the tensor data agree;
2. the same llama.cpp type with and without the importance matrix: perplexity and KLD against the
   unquantised model on held-out text;
3. prefill and decode tokens/s per type in llama.cpp (this project's runner), and file sizes.

Run from the repository root::

    python benchmarks/gguf_bench.py --llama-cpp-src /tmp/llsrc/llama.cpp

``--llama-cpp-src`` is llama.cpp's source tree (``vendor/llama.cpp`` of the llama-cpp-python sdist).
Without one (``--parts imatrix speed``) the conversion section of the previous ``gguf.json`` is kept
in the report, marked with the date and models it was measured on.
Its converter needs two edits for the micro models' custom tokenizer, made in a temporary copy:
``get_vocab_base_pre`` returns ``qwen2`` (the tokenizer's hash is not in its table), and Qwen2's
``set_vocab`` falls back to the GPT-2 vocabulary when ``sentencepiece`` is not installed.
Writes ``benchmarks/gguf.md`` and ``benchmarks/gguf.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("Qwen3-Micro", "Qwen3-Micro-MoE")
IMATRIX_TYPES = ("Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K")
SPEED_TYPES = ("BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K")
DECODE_TOKENS = 128
PARTS = ("conversion", "imatrix", "speed")
NOTES_MARK = "<!-- findings: written by hand, kept when the tables above are regenerated -->\n"
HELD_OUT = "corpus-en/gutenberg/pg43_stevenson_jekyll_and_hyde.txt"

# runs a conversion in a fresh process and reports wall time, CPU time and peak RSS (VmHWM starts
# afresh at exec, unlike ru_maxrss, which keeps the forking parent's peak)
_MEASURE = textwrap.dedent(
    """
    import json, resource, runpy, sys, time
    from pathlib import Path
    kind, args = sys.argv[1], sys.argv[2:]
    t = time.perf_counter()
    if kind == "ours":
        from qwen3_quant.checkpoint import inspect_checkpoint
        from qwen3_quant.formats.gguf.metadata import describe
        from qwen3_quant.formats.gguf.writer import convert
        from qwen3_quant.sources import resolve_model
        src = resolve_model(args[0]); info = inspect_checkpoint(src.path)
        convert(info, describe(src, info), Path(args[1]), out_type="BF16")
    else:
        sys.argv = [args[0], args[1], "--outtype", "bf16", "--outfile", args[2]]
        sys.path.insert(0, str(Path(args[0]).parent))
        runpy.run_path(args[0], run_name="__main__")
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_SELF)
    hwm = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024
    print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "peak_rss": hwm}))
    """
)


def _patched_converter(src: Path, dest: Path) -> Path:
    shutil.copy2(src / "convert_hf_to_gguf.py", dest / "convert_hf_to_gguf.py")
    shutil.copytree(src / "conversion", dest / "conversion")
    shutil.copytree(src / "gguf-py", dest / "gguf-py")
    base = dest / "conversion" / "base.py"
    text = base.read_text()
    sig = "    def get_vocab_base_pre(self, tokenizer) -> str:\n"
    assert sig in text, "llama.cpp's converter changed: update the patch"
    base.write_text(text.replace(sig, sig + '        return "qwen2"\n', 1))
    qwen = dest / "conversion" / "qwen.py"
    text = qwen.read_text()
    old = "        except FileNotFoundError:\n            self._set_vocab_gpt2()"
    assert old in text, "llama.cpp's converter changed: update the patch"
    qwen.write_text(
        text.replace(old, old.replace("FileNotFoundError", "(FileNotFoundError, ModuleNotFoundError)"))
    )
    return dest / "convert_hf_to_gguf.py"


def _measure(kind: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, kind, *map(str, args)], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise RuntimeError(f"{kind} conversion failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_conversion(model_dir: Path, converter: Path, work: Path, repeats: int) -> dict:
    from qwen3_quant.formats.gguf.gguf_io import read_tensor_data

    runs: dict[str, list[dict]] = {"ours": [], "llama.cpp": []}
    for i in range(repeats):  # interleaved, so that load on the machine hits both alike
        runs["ours"].append(_measure("ours", model_dir, work / f"ours-{i}.gguf"))
        runs["llama.cpp"].append(_measure("llama.cpp", converter, model_dir, work / f"llcp-{i}.gguf"))
    a, b = read_tensor_data(work / "ours-0.gguf"), read_tensor_data(work / "llcp-0.gguf")
    res = {
        k: {
            "wall_s": statistics.median(r["wall"] for r in v),
            "cpu_s": statistics.median(r["cpu"] for r in v),
            "peak_rss": max(r["peak_rss"] for r in v),
        }
        for k, v in runs.items()
    }
    res["identical_tensor_data"] = a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    res["tensors"] = len(a)
    return res


def ensure_base(model_dir: Path, work: Path) -> None:
    """The BF16 GGUF the quantisers start from (the conversion benchmark writes it too)."""
    if not (work / "ours-0.gguf").is_file():
        _measure("ours", model_dir, work / "ours-0.gguf")


def bench_imatrix(model_dir: Path, work: Path, texts: dict[str, str], max_tokens: int, samples: int) -> dict:
    from qwen3_quant.calib import load_mix
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.eval.evaluate import EvalOptions, evaluate
    from qwen3_quant.formats.gguf.imatrix import Imatrix, collect_imatrix
    from qwen3_quant.formats.gguf.quantizer import quantize_gguf

    info = inspect_checkpoint(model_dir)
    cs = load_mix("default").build(model_dir, samples=samples)
    t, c = time.perf_counter(), time.process_time()
    im = collect_imatrix(info, cs.samples)
    out = {"calibration": {k: cs.summary()[k] for k in ("mix", "samples", "tokens", "sha256")}}
    out["imatrix_wall_s"], out["imatrix_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    # a uniform matrix (all ones) takes llama.cpp's weighted code path without calibration
    # information: it separates the effect of the path from the effect of the statistics
    uniform = Imatrix()
    for name, e in im.entries.items():
        u = uniform.entry(name, *e.sums.shape)
        u.sums[:], u.counts[:] = 1.0, 1
    variants = {"plain": None, "uniform": uniform, "imatrix": im}
    base = work / "ours-0.gguf"
    rows = []
    for text_name, text in texts.items():
        opts = EvalOptions(text=text, max_tokens=max_tokens, ctx=512, speed=False, threads=1)
        for ftype in IMATRIX_TYPES:
            row = {"text": text_name, "type": ftype}
            for key, matrix in variants.items():
                f = work / f"{ftype}-{key}.gguf"
                quantize_gguf(base, f, ftype, imatrix=matrix)
                e = evaluate(f, base=model_dir, options=opts)
                row[key] = {"ppl": e.perplexity, "kld": e.kld_mean, "top1": e.top1_agreement}
                row["base_ppl"], row["tokens"] = e.base_perplexity, e.tokens_scored
            rows.append(row)
    out["rows"] = rows
    return out


def bench_speed(model_dir: Path, work: Path, repeats: int, threads: int) -> list[dict]:
    """Round-robin over the types, so that load on the shared machine spreads over all of them."""
    from qwen3_quant.formats.gguf.quantizer import quantize_gguf
    from qwen3_quant.formats.gguf.runner import LlamaCppRunner

    base = work / "ours-0.gguf"
    files = {}
    for ftype in SPEED_TYPES:
        files[ftype] = base if ftype == "BF16" else work / f"speed-{ftype}.gguf"
        if ftype != "BF16":
            quantize_gguf(base, files[ftype], ftype)
    prompt = list(range(200, 712))  # 512 tokens
    runs: dict[str, list] = {t: [] for t in SPEED_TYPES}
    for _ in range(repeats):
        for ftype, f in files.items():
            with LlamaCppRunner(f, ctx=1024, threads=threads) as r:
                r.generate(prompt[:16], 4)  # warm-up
                runs[ftype].append(r.generate(prompt, DECODE_TOKENS))
    return [
        {
            "type": t,
            "bytes": files[t].stat().st_size,
            "prefill_tps": statistics.median(g.prefill_tps for g in runs[t]),
            "decode_tps": statistics.median(g.decode_tps for g in runs[t]),
        }
        for t in SPEED_TYPES
    ]


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def report(res: dict, command: str) -> str:
    lines = [
        "# GGUF benchmark",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Run: {res.get('date', 'undated')}. Machine: {res['machine']}. Load average at start {res['load'][0]}, "
        f"at end {res['load'][1]} "
        "(the machine is shared: absolute times are noisy, ratios from interleaved runs less so).",
        "",
        "## Conversion: qwen3-quant's writer vs llama.cpp's convert_hf_to_gguf.py",
        "",
        f"HF safetensors (bf16) -> BF16 GGUF, median of {res['repeats']} interleaved runs, each in a fresh process.",
        "",
        *([res["conversion_note"], ""] if res.get("conversion_note") else []),
        "| model | tool | wall | CPU | peak RSS | identical tensor data |",
        "|---|---|---|---|---|---|",
    ]
    for m, c in res["conversion"].items():
        for tool in ("ours", "llama.cpp"):
            r = c[tool]
            same = ("yes" if c["identical_tensor_data"] else "NO") + f" ({c['tensors']} tensors)"
            lines.append(
                f"| {m} | {tool} | {r['wall_s']:.2f} s | {r['cpu_s']:.2f} s | {_mb(r['peak_rss'])} | {same} |"
            )
        o, ll = c["ours"], c["llama.cpp"]
        lines.append(
            f"| {m} | **ratio ours / llama.cpp** | {o['wall_s'] / ll['wall_s']:.2f}x | "
            f"{o['cpu_s'] / ll['cpu_s']:.2f}x | {o['peak_rss'] / ll['peak_rss']:.2f}x | |"
        )
    lines += [
        "",
        "## Importance matrix: the same type with and without",
        "",
        "llama.cpp's quantiser (`llama_model_quantize`) from the same BF16 file: without an importance matrix "
        "(*plain*), with a uniform one of all ones (*uniform*: llama.cpp's weighted code path, no calibration "
        "information), and with the one computed from the `default` calibration mix (*imatrix*). Perplexity "
        "(ppl) and mean KL divergence (KLD, top-32) against the unquantised model (transformers, fp32), "
        f"windows of 512 tokens, the first {res.get('max_tokens', 16384)} tokens of each text; neither text is "
        "calibration data.",
        "",
    ]
    for m, im in res["imatrix"].items():
        cal = im["calibration"]
        lines += [
            f"### {m}",
            "",
            f"Calibration: mix `{cal['mix']}`, {cal['samples']} samples, {cal['tokens']} tokens; "
            f"importance matrix in {im['imatrix_wall_s']:.0f} s wall ({im['imatrix_cpu_s']:.0f} s CPU).",
            "",
            "| text | type | ppl base | ppl plain | ppl uniform | ppl imatrix | KLD plain | KLD uniform "
            "| KLD imatrix | KLD imatrix / plain | top-1 plain | top-1 imatrix |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in im["rows"]:
            p, u, q = r["plain"], r["uniform"], r["imatrix"]
            lines.append(
                f"| {r['text']} | {r['type']} | {r['base_ppl']:.2f} | {p['ppl']:.2f} | {u['ppl']:.2f} | "
                f"{q['ppl']:.2f} | {p['kld']:.6f} | {u['kld']:.6f} | {q['kld']:.6f} | "
                f"{q['kld'] / p['kld']:.2f}x | {p['top1']:.4f} | {q['top1']:.4f} |"
            )
        lines.append("")
    lines += [
        "## Speed per type in llama.cpp",
        "",
        *([res["speed_note"], ""] if res.get("speed_note") else []),
        f"Prefill of a 512-token prompt and greedy decoding of {DECODE_TOKENS} tokens with the KV cache, "
        f"{res['threads']} thread(s), median of {res['speed_repeats']} runs taken round-robin over the types "
        "(one thread: on a shared 2-core machine, llama.cpp's spinning worker threads make 2-thread timings "
        "swing several-fold).",
        "",
        "| model | type | file | prefill tok/s | decode tok/s | prefill vs BF16 | decode vs BF16 |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, rows in res["speed"].items():
        b = rows[0]
        for r in rows:
            lines.append(
                f"| {m} | {r['type']} | {_mb(r['bytes'])} | {r['prefill_tps']:.0f} | {r['decode_tps']:.0f} | "
                f"{r['prefill_tps'] / b['prefill_tps']:.2f}x | {r['decode_tps'] / b['decode_tps']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp-src", type=Path, default=Path("/tmp/llsrc/llama.cpp"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16384)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--speed-repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gguf.md")
    ap.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="what to measure; the others are kept from the previous results (--out's .json)",
    )
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument(
        "--kept-from",
        default="an earlier run",
        help="how the report names the run whose kept sections it shows (date, models)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from qwen3_quant.artifact import host_description
    from qwen3_quant.catalog import bundled_models
    from qwen3_quant.textdata import shared_data_dir

    data = shared_data_dir()
    texts = {"held-out book (Jekyll and Hyde)": str(data / HELD_OUT), "wikitext-2 test": "wikitext2"}
    res: dict = {"machine": host_description(), "repeats": args.repeats, "threads": args.threads}
    res["speed_repeats"] = args.speed_repeats
    res["max_tokens"] = args.max_tokens
    res["load"] = [round(os.getloadavg()[0], 2), None]
    previous = args.out.with_suffix(".json")
    kept = json.loads(previous.read_text()) if previous.is_file() else {}
    for part in PARTS:
        if part in args.parts:
            res[part] = {}
        elif part in kept:
            res[part] = kept[part]
            if part == "speed":
                res["speed_repeats"] = kept.get("speed_repeats", res["speed_repeats"])
            if kept.get(f"{part}_note"):
                res[f"{part}_note"] = kept[f"{part}_note"]
            elif kept.get("date"):
                res[f"{part}_note"] = (
                    f"Measured in an earlier run ({kept['date']}, load {kept['load'][0]} at start), "
                    "on the same models."
                )
            else:
                res[f"{part}_note"] = (
                    f"Not rerun: these numbers are from {args.kept_from} "
                    f"(machine load then: {kept['load'][0]} at start)."
                )
        else:
            raise SystemExit(f"no earlier {part} results in {previous}: measure it with --parts {part}")
    if "conversion" in args.parts and not (args.llama_cpp_src / "convert_hf_to_gguf.py").is_file():
        raise SystemExit(
            f"no llama.cpp checkout at {args.llama_cpp_src}: pass --llama-cpp-src, or leave conversion "
            "out with --parts imatrix speed"
        )
    with tempfile.TemporaryDirectory(prefix="gguf-bench-") as tmp:
        tmp = Path(tmp)
        if "conversion" in args.parts:
            converter = _patched_converter(args.llama_cpp_src, Path(tempfile.mkdtemp(dir=tmp)))
        for name in args.models:
            model = bundled_models()[name]
            work = tmp / name
            work.mkdir()
            if "conversion" in args.parts:
                res["conversion"][name] = bench_conversion(model, converter, work, args.repeats)
                print(json.dumps({name: res["conversion"][name]}), flush=True)
            ensure_base(model, work)
            if "imatrix" in args.parts:
                res["imatrix"][name] = bench_imatrix(model, work, texts, args.max_tokens, args.calib_samples)
            if "speed" in args.parts:
                res["speed"][name] = bench_speed(model, work, args.speed_repeats, args.threads)
            partial = args.out.with_suffix(".partial.json")
            partial.write_text(json.dumps(res, indent=1) + "\n")  # what is measured so far
    res["load"][1] = round(os.getloadavg()[0], 2)
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = "python benchmarks/gguf_bench.py " + " ".join(map(shlex.quote, sys.argv[1:]))
    old = args.out.read_text() if args.out.is_file() else ""
    notes = NOTES_MARK + old.split(NOTES_MARK, 1)[1] if NOTES_MARK in old else ""  # hand-written findings
    args.out.write_text(report(res, command) + ("\n" + notes if notes else ""))
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
