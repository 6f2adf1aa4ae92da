"""Score GGUF files (or any artifact qwen3-quant evaluates) against the unquantised model on texts.

    PYTHONPATH=. python benchmarks/quality_eval.py BASE_MODEL_DIR TEXT1,TEXT2 MAX_TOKENS FILE...

One JSON line per file: size, and per text the perplexity increase (%), mean KL divergence over
the reference's top-32 and top-1 agreement (qwen3-quant's fixed protocol, ctx 512). Keep the files
outside an artifact folder (or pass artifact folders), so that each names one variant.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3_quant.eval.evaluate import EvalOptions, evaluate  # noqa: E402


def main() -> None:
    base, texts, n = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    for f in sys.argv[4:]:
        row = {"file": Path(f).name, "bytes": Path(f).stat().st_size}
        for t in texts:
            opts = EvalOptions(text=t, ctx=512, max_tokens=n, speed=False, threads=1)
            r = evaluate(Path(f), base=base, options=opts)
            row[Path(t).stem] = {
                "ppl+%": round(r.ppl_increase_pct, 3),
                "kld": r.kld_mean,
                "top1": round(r.top1_agreement, 4),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
