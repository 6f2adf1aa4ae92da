"""The one quality table: every format and method at 8, ~6, ~5, 4 and 3 bits on the micro models.

    QWEN3_QUANT_DATA=../shared/data PYTHONPATH=. nice -n 10 python benchmarks/quality_table.py run \
        --models Qwen3-Micro,Qwen3-Micro-MoE --max-tokens 8192
    PYTHONPATH=. python benchmarks/quality_table.py report
    PYTHONPATH=. python benchmarks/quality_table.py gates    # re-derive qwen3_quant/eval/gates.toml

``run`` makes each artifact with the project's own code (``qwen3_quant.quantize.quantize``, the
library behind ``qwen3-quant quantize``; the GPTQModel RTN rows and the bit widths the CLI does not
offer through the same format packages' library calls), reloads it in its own runtime (llama.cpp,
transformers + GPTQModel, onnxruntime, mlx) and scores it with the project's evaluation against the
unquantised model on two held-out texts: perplexity +%, mean KLD over the reference's top-32, top-1
agreement (ctx 512). Each (model, row) goes into benchmarks/quality.json as soon as it is measured
and is skipped when already measured, so a killed run resumes (failed rows are retried). ``report`` writes benchmarks/quality.md's
table section and benchmarks/quality_kld_vs_size.png from the JSON; ``gates`` the default gates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "quality.json"
REPORT = ROOT / "benchmarks" / "quality.md"
PLOT = ROOT / "benchmarks" / "quality_kld_vs_size.png"
TEXTS = ("held-out book", "gsm8k-chat")
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".onnx", ".data", ".bin")


@dataclass(frozen=True)
class Row:
    """One table row: ``group`` names the artifact folder it comes from (GGUF folders hold several
    types), ``variant`` the variant inside it; ``make`` how the folder is written."""

    label: str
    family: str  # marker / colour in the plot
    bits: int  # the gate class
    group: str
    variant: str | None
    peer: bool = False  # a peer's default (the baseline of its family)
    note: str = ""
    make: dict = field(default_factory=dict, hash=False, compare=False)


GGUF_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M")
GGUF_BITS = {"Q8_0": 8, "Q6_K": 6, "Q5_K_M": 5, "Q4_K_M": 4, "Q3_K_M": 3}


def rows() -> list[Row]:
    """In the order they are measured: what the goals need first, the library-only widths last."""
    out: list[Row] = []
    noimat = {"fmt": "gguf", "types": ",".join(GGUF_TYPES), "imatrix": False}
    imat = {"fmt": "gguf", "types": ",".join(GGUF_TYPES) + ",auto:Q4_K_M,auto:Q3_K_M", "imatrix": True}
    for t in ("Q4_K_M", "Q3_K_M", "Q8_0", "Q6_K", "Q5_K_M"):
        out.append(Row(f"GGUF {t}", "GGUF", GGUF_BITS[t], "gguf-noimatrix", t, peer=True, make=noimat))
        out.append(Row(f"GGUF {t} + imatrix", "GGUF + imatrix", GGUF_BITS[t], "gguf-imatrix", t, make=imat))
        if t in ("Q4_K_M", "Q3_K_M"):
            out.append(
                Row(f"GGUF auto:{t}", "GGUF auto", GGUF_BITS[t], "gguf-imatrix", f"AUTO_{t}", make=imat)
            )
    for bits in (4, 8):
        out.append(
            Row(
                f"RTN-Int{bits}",
                "RTN (GPTQModel)",
                bits,
                f"rtn{bits}",
                None,
                peer=True,
                make=_gq("rtn", bits, True),
            )
        )
        out.append(Row(f"GPTQ-Int{bits}", "GPTQ", bits, f"gptq{bits}", None, make=_gq("gptq", bits, True)))
        if bits == 4:
            out.append(
                Row(
                    "RTN-Int4 asym",
                    "RTN (GPTQModel)",
                    4,
                    "rtn4-asym",
                    None,
                    peer=True,
                    make=_gq("rtn", 4, False),
                )
            )
            out.append(Row("AWQ-Int4", "AWQ", 4, "awq4", None, make=_gq("awq", 4, False)))
    onnx = {"fmt": "onnx"}
    out.append(
        Row("ONNX int4 RTN", "ONNX", 4, "onnx-int4-rtn", None, peer=True, make={**onnx, "precision": "int4"})
    )
    out.append(
        Row(
            "ONNX int4 k_quant",
            "ONNX",
            4,
            "onnx-int4-kq",
            None,
            make={**onnx, "precision": "int4", "quantizer": "k_quant"},
        )
    )
    out.append(Row("ONNX int8", "ONNX", 8, "onnx-int8", None, make={**onnx, "precision": "int8"}))
    for bits in (8, 4):
        out.append(Row(f"MLX {bits}-bit", "MLX", bits, f"mlx{bits}", None, make={"fmt": "mlx", "bits": bits}))
    for recipe, bits in (("mixed_4_6", 4), ("mixed_3_6", 3)):  # gated by their low width
        out.append(
            Row(
                f"MLX {recipe}",
                "MLX mixed",
                bits,
                f"mlx-{recipe}",
                None,
                make={"fmt": "mlx", "recipe": recipe},
            )
        )
    # the 16- and 2-bit gate classes
    extra = {"fmt": "gguf", "types": "BF16,Q2_K", "imatrix": False}
    out.append(Row("GGUF BF16", "GGUF", 16, "gguf-extra", "BF16", peer=True, make=extra))
    out.append(Row("GGUF Q2_K", "GGUF", 2, "gguf-extra", "Q2_K", peer=True, make=extra))
    q2 = {"fmt": "gguf", "types": "Q2_K", "imatrix": True}
    out.append(Row("GGUF Q2_K + imatrix", "GGUF + imatrix", 2, "gguf-q2-imatrix", "Q2_K", make=q2))
    out.append(Row("ONNX fp16", "ONNX", 16, "onnx-fp16", None, make={**onnx, "precision": "fp16"}))
    lib = "library only: the CLI does not offer this width"
    for bits in (6, 5, 3):
        out.append(
            Row(
                f"MLX {bits}-bit",
                "MLX",
                bits,
                f"mlx{bits}",
                None,
                note=lib,
                make={"library": "mlx", "bits": bits},
            )
        )
    return out


def _gq(method: str, bits: int, sym: bool) -> dict:
    return {"library": "gptqmodel", "method": method, "bits": bits, "sym": sym}


# --- making artifacts ------------------------------------------------------------------------------


def make_group(model: str, row: Row, dest: Path, samples: int) -> None:
    """Write ``row``'s artifact folder with the project's library (kept when already complete)."""
    if (dest / ".quality-table-done").exists():
        return
    m = dict(row.make)
    lib = m.pop("library", None)
    if lib == "gptqmodel":
        from qwen3_quant.checkpoint import inspect_checkpoint
        from qwen3_quant.formats.gptqmodel.config import GPTQModelConfig
        from qwen3_quant.formats.gptqmodel.quantizer import quantize_artifact
        from qwen3_quant.sources import resolve_model

        src = resolve_model(model)
        cfg = GPTQModelConfig(calib_samples=samples, **m)
        fmt = m["method"] if m["method"] != "rtn" else "gptq"
        quantize_artifact(src, inspect_checkpoint(src.path), cfg, dest, fmt=fmt)
    elif lib == "mlx":
        from qwen3_quant.checkpoint import inspect_checkpoint
        from qwen3_quant.device import resolve_device
        from qwen3_quant.formats import get_format
        from qwen3_quant.formats.base import no_progress
        from qwen3_quant.formats.mlx.config import DEFAULT_GROUP_SIZE, MLXConfig
        from qwen3_quant.provenance import Provenance
        from qwen3_quant.sources import resolve_model

        src = resolve_model(model)
        cfg = MLXConfig(m["bits"], DEFAULT_GROUP_SIZE, None)
        prov = Provenance("python", f"MLX format quantize(MLXConfig({m['bits']}, {DEFAULT_GROUP_SIZE}))")
        get_format("mlx").quantize(
            src,
            inspect_checkpoint(src.path),
            cfg,
            dest,
            overwrite=True,
            progress=no_progress,
            provenance=prov,
            device=resolve_device("cpu"),
        )
    else:
        from qwen3_quant.quantize import quantize

        fmt = m.pop("fmt")
        if fmt == "gguf":
            m["types"] = m["types"].split(",")
        if fmt == "gguf" and m["imatrix"]:
            m["calib_samples"] = samples
        quantize(model, fmt, out_dir=dest, overwrite=True, validate=False, device="cpu", **m)
    (dest / ".quality-table-done").write_text(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def target_of(dest: Path, row: Row):
    from qwen3_quant.eval.evaluate import eval_targets

    targets = eval_targets(dest)
    if row.variant is None:
        if len(targets) != 1:
            raise RuntimeError(f"{dest} holds {len(targets)} variants")
        return targets[0]
    for t in targets:
        if (t.variant or "").upper() == row.variant.upper() or t.path.name.upper().endswith(
            f"-{row.variant}.GGUF"
        ):
            return t
    raise RuntimeError(f"no variant {row.variant} in {dest}: {[t.variant for t in targets]}")


def weight_bytes(path: Path) -> int:
    """Bytes of the weights the runtime loads: the GGUF file, or a folder's weight files."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def tensor_bytes(path: Path) -> int:
    """Bytes of tensor data alone: a GGUF file also holds the tokenizer and metadata."""
    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        return sum(int(t.n_bytes) for t in GGUFReader(path).tensors)
    return weight_bytes(path)


def add_sizes(entry: dict, path: Path, params: int) -> dict:
    entry["bytes"] = weight_bytes(path)
    entry["tensor_bytes"] = tensor_bytes(path)
    entry["bpw"] = entry["tensor_bytes"] * 8 / params
    entry["params"] = params
    return entry


def param_count(model_dir: Path) -> int:
    import math

    from safetensors import safe_open

    n = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(f, "np") as st:
            for k in st.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                n += int(math.prod(st.get_slice(k).get_shape()))
    return n


def score(target, base: Path, texts: dict[str, str], max_tokens: int) -> dict:
    from qwen3_quant.eval.evaluate import EvalOptions, evaluate

    out = {}
    for name, text in texts.items():
        opts = EvalOptions(text=text, ctx=512, max_tokens=max_tokens, speed=False, threads=1, device="cpu")
        r = evaluate(target, base=base, options=opts)
        out[name] = {
            "ppl": r.perplexity,
            "base_ppl": r.base_perplexity,
            "ppl_increase_pct": r.ppl_increase_pct,
            "kld_mean": r.kld_mean,
            "top1": r.top1_agreement,
            "tokens_scored": r.tokens_scored,
        }
    return out


def load_results() -> dict:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"runs": [], "models": {}}


def save_results(res: dict) -> None:
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    os.replace(tmp, RESULTS)


def update_results(change) -> None:
    """Re-read, change and write back under a lock, so two runs (one per model) can share the file."""
    import fcntl

    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = load_results()
        change(res)
        save_results(res)


def merge_row(model: str, label: str, row: dict) -> None:
    update_results(lambda res: res["models"].setdefault(model, {}).__setitem__(label, row))


def run(args) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from gptq_bench import gsm8k_chat_text, held_out_book

    from qwen3_quant.artifact import library_versions
    from qwen3_quant.sources import resolve_model

    args.work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    run_facts = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit.stdout.strip(),
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "versions": library_versions(
            (
                "llama_cpp_python",
                "gptqmodel",
                "transformers",
                "torch",
                "onnxruntime",
                "onnxruntime-genai",
                "mlx",
                "mlx-lm",
            )
        ),
        "models": args.models,
        "max_tokens": args.max_tokens,
        "calib_samples": args.samples,
    }
    update_results(lambda res: res["runs"].append(run_facts))
    wanted = set(args.rows.split(",")) if args.rows else None
    for model in args.models.split(","):
        src = resolve_model(model)
        texts = {
            "held-out book": str(held_out_book(args.work / "jekyll-and-hyde.txt")),
            "gsm8k-chat": str(gsm8k_chat_text(src.path, args.work / f"{model}-chat.txt")),
        }
        params = param_count(src.path)
        for row in rows():
            if wanted and row.label not in wanted:
                continue
            done = load_results()["models"].get(model, {}).get(row.label, {})
            if "scores" in done:
                if "tensor_bytes" not in done and Path(done["artifact"]).exists():
                    merge_row(model, row.label, add_sizes(done, Path(done["artifact"]), params))
                continue
            dest = args.work / model / row.group
            t0 = time.time()
            try:
                make_group(model, row, dest, args.samples)
                made = time.time() - t0
                target = target_of(dest, row)
                entry = {
                    "family": row.family,
                    "bits": row.bits,
                    "peer": row.peer,
                    "note": row.note,
                    "artifact": str(target.path),
                    "made_s": round(made),
                    "commit": commit.stdout.strip(),
                    "scores": score(target, src.path, texts, args.max_tokens),
                }
                add_sizes(entry, target.path, params)
            except Exception as exc:  # a row that fails is recorded and the run goes on
                traceback.print_exc()
                entry = {
                    "family": row.family,
                    "bits": row.bits,
                    "note": row.note,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            entry["seconds"] = round(time.time() - t0)
            merge_row(model, row.label, entry)
            print(model, row.label, json.dumps(entry), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--models", default="Qwen3-Micro,Qwen3-Micro-MoE")
    r.add_argument("--rows", help="only these row labels (comma-separated)")
    r.add_argument("--samples", type=int, default=32, help="calibration samples (GGUF imatrix, GPTQ, AWQ)")
    r.add_argument("--max-tokens", type=int, default=8192)
    r.add_argument("--work", type=Path, default=Path("/tmp/qwen3-quant-quality-table"))
    sub.add_parser("report")
    sub.add_parser("gates", help="rewrite qwen3_quant/eval/gates.toml from the table")
    args = ap.parse_args()
    if args.mode == "run":
        os.environ.setdefault("QWEN3_QUANT_CACHE", str(args.work / "cache"))
        return run(args)
    from quality_report import write_gates, write_report

    update_results(refresh_row_facts)
    if args.mode == "gates":
        return write_gates(load_results(), ROOT / "qwen3_quant" / "eval" / "gates.toml")
    write_report(load_results(), REPORT, PLOT)


def refresh_row_facts(res: dict) -> None:
    """Class, family, peer and note come from ``rows()``, not from when a row was measured; rows
    that ``rows()`` no longer has are dropped."""
    facts = {r.label: r for r in rows()}
    for model_rows in res["models"].values():
        for label in [k for k in model_rows if k not in facts]:  # a row no longer in the table
            del model_rows[label]
        for label, entry in model_rows.items():
            if label in facts:
                r = facts[label]
                entry.update(family=r.family, bits=r.bits, peer=r.peer, note=r.note)


if __name__ == "__main__":
    main()
