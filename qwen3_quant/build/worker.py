"""Runs one build cell in its own process: ``python -m qwen3_quant.build.worker --build F --out D --cell ID``."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cell", required=True)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--device")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # GPTQModel's pool: libenv.prepare_env
    logging.basicConfig(level=logging.WARNING, format=f"[{args.cell}] %(levelname)s %(message)s")
    from ..formats import noisy_loggers

    for noisy in noisy_loggers():
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from ..progress import PlainProgress
    from .run import run_cell
    from .spec import load_build, select

    spec = load_build(args.build or None, out=args.out, device=args.device)
    (cell,) = select(spec.cells(), [args.cell])
    # plain lines whatever stderr is: several workers share the build's terminal or log
    progress = PlainProgress(sys.stderr, label=args.cell, interval=60.0)
    entry = run_cell(spec, cell, force=args.force, progress=progress)
    return 0 if entry.get("status") in ("passed", "failed") else 1


if __name__ == "__main__":
    raise SystemExit(main())
