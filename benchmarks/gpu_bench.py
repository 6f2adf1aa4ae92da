"""GPTQ wall time of a Qwen3-0.6B-shaped checkpoint (real config, random weights) on one device,
and (with --parity) GPU-vs-CPU parity of GPTQ and the importance matrix on the trained micro model.

    PYTHONPATH=. python benchmarks/gpu_bench.py --device cpu --json benchmarks/gpu_cpu_baseline.json
    PYTHONPATH=. python benchmarks/gpu_bench.py --device cuda --parity --json OUT.json --md OUT.md

scripts/gpu_check.sh runs the second line on a GPU machine. The timed run is `quantize()` with
--no-validate: calibration (the offline `builtin` mix, --samples samples of up to 512 tokens), the
GPTQModel worker (model load, per-layer calibration forwards and solver, packing), saving, the
manifest. Parity quantises Qwen3-Micro with GPTQ on the CPU and on the GPU, evaluates both in the
same runtime on the same device, and compares their KLD against the unquantised model; it also
compares the importance matrix collected on each device.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def timed_gptq(ckpt: Path, out: Path, device: str, samples: int) -> dict:
    from qwen3_quant.artifact import Manifest
    from qwen3_quant.quantize import quantize

    t0 = time.perf_counter()
    res = quantize(
        str(ckpt),
        "gptq",
        out_dir=out,
        overwrite=True,
        validate=False,
        device=device,
        calib="builtin",
        calib_samples=samples,
    )
    wall = time.perf_counter() - t0
    m = Manifest.read(res.artifact_dir)
    rec = m.variant(res.variants[0])
    d = rec.details or {}
    return {
        "checkpoint": ckpt.name,
        "device": d.get("device"),
        "quantised_on": rec.provenance.quantised_on if rec.provenance else None,
        "samples": samples,
        "wall_seconds": round(wall, 1),
        "quantize_seconds": d.get("seconds_quantize"),
        "worker_peak_rss_bytes": d.get("worker_peak_rss_bytes"),
        "worker_peak_vram_bytes": d.get("worker_peak_vram_bytes"),
        "layers": json.loads((ckpt / "config.json").read_text())["num_hidden_layers"],
    }


def parity(work: Path, device: str, samples: int) -> dict:
    """GPTQ of Qwen3-Micro made on the CPU and on ``device``, both scored on ``device``; the
    importance matrix collected on each."""
    import numpy as np

    from qwen3_quant.calib import load_mix
    from qwen3_quant.catalog import bundled_models
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.device import resolve_device
    from qwen3_quant.eval.evaluate import EvalOptions
    from qwen3_quant.formats.gguf.imatrix import collect_imatrix
    from qwen3_quant.quantize import quantize

    micro = bundled_models()["Qwen3-Micro"]
    opts = EvalOptions(max_tokens=4096, ctx=256, reference_dir=work / "ref", device=device)
    out: dict = {"model": "Qwen3-Micro", "text": "builtin:pydoc, 4096 tokens, ctx 256"}
    for made_on in ("cpu", device):
        t0 = time.perf_counter()
        res = quantize(
            "Qwen3-Micro",
            "gptq",
            out_dir=work / f"micro-gptq-{made_on.replace(':', '')}",
            overwrite=True,
            device=made_on,
            eval_options=opts,
            calib="builtin",
            calib_samples=samples,
        )
        v = res.validations[0]
        out[f"gptq_made_on_{made_on}"] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "kld_mean": v.kld_mean,
            "ppl_increase_pct": v.ppl_increase_pct,
            "top1_agreement": v.top1_agreement,
            "decode_tps": v.decode_tps,
            "prefill_tps": v.prefill_tps,
            "backend": v.backend,
            "validated_on": v.hardware,
            "passed": v.passed,
        }
    info = inspect_checkpoint(micro)
    cs = load_mix("builtin").build(micro, samples=8, seq_len=128)
    cpu_im = collect_imatrix(info, cs.samples, device=resolve_device("cpu"))
    dev_im = collect_imatrix(info, cs.samples, device=resolve_device(device))
    worst = 0.0
    for name, e in cpu_im.entries.items():
        g = dev_im.entries[name]
        assert np.array_equal(e.counts, g.counts), name
        worst = max(worst, float(np.max(np.abs(g.sums - e.sums) / np.maximum(np.abs(e.sums), 1e-12))))
    out["imatrix_max_rel_diff"] = worst
    return out


def _gb(n: int | None) -> str:
    return f"{n / 1e9:.2f} GB" if n else "-"


def markdown(r: dict) -> str:
    t = r["timed"]
    lines = [
        "```sh",
        r["command"],
        "```",
        "",
        f"Device: {r['device_described']}; host {r['host']}.",
        "",
        f"GPTQ W4g128 of {t['checkpoint']} ({t['layers']} layers, real config, random weights), "
        f"{t['samples']} calibration samples (builtin mix, up to 512 tokens), --no-validate:",
        "",
        "| device | wall s | GPTQModel s | s per layer | worker peak RSS | worker peak VRAM |",
        "|---|---|---|---|---|---|",
        f"| {t['device']} | {t['wall_seconds']} | {round(t['quantize_seconds'] or 0, 1)} | "
        f"{(t['quantize_seconds'] or 0) / t['layers']:.1f} | "
        f"{_gb(t['worker_peak_rss_bytes'])} | {_gb(t['worker_peak_vram_bytes'])} |",
    ]
    p = r.get("parity")
    if p:
        lines += [
            "",
            f"Parity on {p['model']} ({p['text']}), both artifacts scored on {t['device']}:",
            "",
            "| made on | KLD mean | PPL change % | top-1 | decode tok/s | kernel |",
            "|---|---|---|---|---|---|",
        ]
        for k, v in p.items():
            if k.startswith("gptq_made_on_"):
                lines.append(
                    f"| {k.removeprefix('gptq_made_on_')} | {v['kld_mean']:.5f} | "
                    f"{v['ppl_increase_pct']:+.2f} | {v['top1_agreement']:.4f} | "
                    f"{v['decode_tps']:.1f} | {v['backend']} |"
                )
        lines += [
            "",
            f"Importance matrix, CUDA vs CPU: max relative difference {p['imatrix_max_rel_diff']:.2e}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="Qwen3-0.6B", help="catalog model whose shape is used")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--layers", type=int, help="only the first N decoder layers (all widths real)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/qwen3-quant-gpu-bench"))
    ap.add_argument("--parity", action="store_true", help="also GPU-vs-CPU parity on Qwen3-Micro")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    from make_shaped_checkpoint import make

    from qwen3_quant.artifact import host_description
    from qwen3_quant.device import resolve_device

    dev = resolve_device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    name = f"{args.model}-shaped" + (f"-L{args.layers}" if args.layers else "")
    ckpt = make(args.model, args.work / name, layers=args.layers)
    r: dict = {
        "command": "PYTHONPATH=. python benchmarks/gpu_bench.py " + " ".join(sys.argv[1:]),
        "device_described": dev.describe(),
        "host": host_description(),
        "python": platform.python_version(),
        "timed": timed_gptq(ckpt, args.work / f"{name}-gptq", args.device, args.samples),
    }
    print(json.dumps(r["timed"]), flush=True)
    if args.parity:
        r["parity"] = parity(args.work, args.device, min(args.samples, 32))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2, default=str) + "\n")
    if args.md:
        args.md.write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
