"""A checkpoint with a catalog model's real config (layers, widths, heads, vocabulary) and random
weights, with the bundled micro tokenizer: what timing runs quantise when the real weights are not
on the machine. It proves speed and memory, not quality.

    PYTHONPATH=. python scripts/make_shaped_checkpoint.py Qwen3-0.6B /tmp/Qwen3-0.6B-shaped

``--layers N`` keeps every width of the real config and only the first N decoder layers (a CPU
baseline that finishes; GPTQ's time is per layer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make(name: str, out: Path, seed: int = 0, layers: int | None = None) -> Path:
    import dataclasses

    from qwen3_quant.catalog import catalog
    from qwen3_quant.testing.tiny import build_model

    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    arch = catalog()[name].arch
    if layers:
        arch = dataclasses.replace(arch, num_hidden_layers=layers)
    return build_model(arch, out, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="catalog name, e.g. Qwen3-0.6B")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, help="keep only the first N decoder layers")
    args = ap.parse_args()
    print(make(args.model, args.out, args.seed, args.layers))


if __name__ == "__main__":
    main()
