"""Write GGUF automatic mixes from an existing qwen3-quant GGUF folder (its BF16 conversion and
importance matrix), the way ``qwen3-quant quantize --type auto:...`` does.

    PYTHONPATH=. python benchmarks/quality_auto.py GGUF_FOLDER MODEL_STEM auto:Q4_K_M,auto:Q3_K_M MODEL_DIR OUT_DIR

The folder comes from ``qwen3-quant quantize MODEL --format gguf --type Q4_K_M,Q3_K_M --calib-samples 32``.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3_quant.calib import load_mix  # noqa: E402
from qwen3_quant.formats.gguf.autotype import auto_name, parse_auto, plan_auto  # noqa: E402
from qwen3_quant.formats.gguf.build import KLD_WINDOW, KLD_WINDOWS  # noqa: E402
from qwen3_quant.formats.gguf.imatrix import Imatrix  # noqa: E402
from qwen3_quant.formats.gguf.quantizer import quantize_gguf  # noqa: E402


def main() -> None:
    d, stem, specs, model, out_dir = (
        Path(sys.argv[1]),
        sys.argv[2],
        sys.argv[3],
        sys.argv[4],
        Path(sys.argv[5]),
    )
    base = d / ".work" / f"{stem}-BF16.gguf"
    im = Imatrix.load(d / f"{stem}.imatrix.gguf")
    cs = load_mix("default").build(model, samples=KLD_WINDOWS)
    windows = [s[:KLD_WINDOW] for s in cs.samples[:KLD_WINDOWS]]
    scratch = out_dir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    for spec in specs.split(","):
        target = parse_auto(spec)
        t0 = time.time()
        plan = plan_auto(base, im, target, scratch, threads=2, kld_windows=windows)
        out = out_dir / f"{stem}-{auto_name(target)}.gguf"
        quantize_gguf(base, out, plan.ftype, imatrix=im, tensor_types=plan.tensor_types, threads=2)
        rec = {"spec": spec, "seconds": round(time.time() - t0), "bytes": out.stat().st_size, **plan.recipe()}
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
