"""Give the trained micro models salient channels in place, without changing their logits.

    python scripts/salient_channels.py apply             # both models, recorded in training.json
    python scripts/salient_channels.py rtn-kld           # fake-quant RTN-Int4 KLD, before/after check

See ``qwen3_quant/testing/salient.py`` for the maths. ``apply`` loads each model in float32,
applies the seeded plan, checks that the logits on held-out text equal the original's (max abs
difference, must be <= 1e-5; with power-of-two scales it is 0), writes ``model.safetensors`` in
bf16 through a temporary name and records the plan and the check in ``training.json``. A model
that already has a record is left alone (``--force`` applies the plan once more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MICRO = ROOT / "qwen3_quant" / "assets" / "micro"
SEED = 14
# Per model: hidden channels (norm weight x s, readers' columns / s), v_proj rows (x s, o_proj
# columns / s) and up_proj rows (x s, down_proj columns / s), with their scales.
PLANS = {
    "Qwen3-Micro": dict(
        hidden_channels=8, hidden_scale=32.0, v_rows=8, v_scale=16.0, ffn_rows=8, ffn_scale=16.0
    ),
    "Qwen3-Micro-MoE": dict(
        hidden_channels=8, hidden_scale=32.0, v_rows=8, v_scale=16.0, ffn_rows=8, ffn_scale=16.0
    ),
}
CHECK_TOKENS = 1024
MAX_LOGIT_DIFF = 1e-5


def _held_out_ids(model_dir: Path, n: int):
    import numpy as np
    from transformers import AutoTokenizer

    from qwen3_quant.textdata import read_text, shared_data_dir, strip_gutenberg

    book = shared_data_dir() / "corpus-en/gutenberg/pg43_stevenson_jekyll_and_hyde.txt"
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(strip_gutenberg(read_text(book)), add_special_tokens=False)["input_ids"]
    return np.asarray(ids[:n], dtype=np.int64)


def _logits(model, ids, ctx: int = 512):
    import torch

    outs = []
    with torch.no_grad():
        for s in range(0, len(ids), ctx):
            x = torch.from_numpy(ids[s : s + ctx])[None]
            outs.append(model(input_ids=x).logits[0].float())
    return torch.cat(outs)


def _load(model_dir: Path, state=None):
    import defuser
    import torch
    from transformers import AutoModelForCausalLM

    defuser.replace_fused_blocks("qwen3_moe")  # per-expert Linear modules, as the checkpoint stores them
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if state is not None:
        missing, unexpected = m.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and m.config.tie_word_embeddings)]
        if missing or unexpected:
            raise SystemExit(
                f"state does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    return m.eval()


def apply(names: list[str], force: bool) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from qwen3_quant.testing.salient import apply_salient_plan, seeded_plan

    torch.set_num_threads(2)
    for name in names:
        d = MICRO / name
        training = json.loads((d / "training.json").read_text())
        if "salient_channels" in training and not force:
            print(
                f"{name}: already has salient channels ({training['salient_channels']['plan']}); --force to redo"
            )
            continue
        config = json.loads((d / "config.json").read_text())
        state = load_file(d / "model.safetensors")
        plan = seeded_plan(config, seed=SEED, **PLANS[name])
        new = apply_salient_plan(state, config, plan)
        ids = _held_out_ids(d, CHECK_TOKENS)
        before = _logits(_load(d), ids)
        after = _logits(_load(d, new), ids)
        diff = float((before - after).abs().max())
        print(f"{name}: {plan.as_record()} max |logit diff| {diff:.3g}")
        if not diff <= MAX_LOGIT_DIFF:
            raise SystemExit(f"{name}: logits changed by {diff} > {MAX_LOGIT_DIFF}; nothing written")
        tmp = d / "model.safetensors.partial"
        save_file({k: v.contiguous() for k, v in new.items()}, tmp, metadata={"format": "pt"})
        tmp.chmod(0o644)
        os.replace(tmp, d / "model.safetensors")
        training["salient_channels"] = {
            "plan": plan.as_record(),
            "seed": SEED,
            "check": {"tokens": int(len(ids)), "max_abs_logit_diff": diff},
            "script": "scripts/salient_channels.py",
        }
        (d / "training.json").write_text(json.dumps(training, indent=2) + "\n")
        print(f"{name}: written")


def rtn_fake_quant(w, bits: int = 4, group: int = 128):
    """Asymmetric round-to-nearest per group of ``group`` input channels (GPTQModel RTN / AutoAWQ layout)."""
    import torch

    out_f, in_f = w.shape
    g = w.float().reshape(out_f, in_f // group, group)
    lo, hi = g.amin(-1, keepdim=True).clamp(max=0), g.amax(-1, keepdim=True).clamp(min=0)
    qmax = 2**bits - 1
    scale = ((hi - lo) / qmax).clamp(min=1e-10)
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(g / scale) + zero, 0, qmax)
    return ((q - zero) * scale).reshape(out_f, in_f).to(w.dtype)


def rtn_kld(names: list[str], tokens: int, trial: dict | None) -> None:
    """RTN-Int4 KLD of the models as they are, or (``trial``) with a plan applied in memory first."""
    import torch
    from safetensors.torch import load_file

    from qwen3_quant.testing.salient import apply_salient_plan, seeded_plan

    torch.set_num_threads(2)
    for name in names:
        d = MICRO / name
        ids = _held_out_ids(d, tokens)
        state = None
        if trial is not None:
            config = json.loads((d / "config.json").read_text())
            plan = seeded_plan(config, seed=SEED, **{**PLANS[name], **trial})
            state = apply_salient_plan(load_file(d / "model.safetensors"), config, plan)
            print(name, plan.as_record())
        ref = _load(d, state)
        lp_ref = torch.log_softmax(_logits(ref, ids), -1)
        q = _load(d, state)
        with torch.no_grad():
            for n, mod in q.named_modules():
                if (
                    isinstance(mod, torch.nn.Linear)
                    and n.startswith("model.layers.")
                    and not n.endswith("mlp.gate")
                ):
                    mod.weight.copy_(rtn_fake_quant(mod.weight))
        lp_q = torch.log_softmax(_logits(q, ids), -1)
        kld = (lp_ref.exp() * (lp_ref - lp_q)).sum(-1)
        nll_ref = -lp_ref[:-1].gather(1, torch.from_numpy(ids[1:])[:, None]).mean()
        nll_q = -lp_q[:-1].gather(1, torch.from_numpy(ids[1:])[:, None]).mean()
        top1 = (lp_ref.argmax(-1) == lp_q.argmax(-1)).float().mean()
        print(
            f"{name}: RTN-Int4 asym g128 KLD {kld.mean():.4g}  ppl {nll_ref.exp():.1f} -> {nll_q.exp():.1f}  "
            f"top-1 {top1:.3f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["apply", "rtn-kld"])
    ap.add_argument("--models", default=",".join(PLANS))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument(
        "--trial", help="rtn-kld: apply a plan in memory first, JSON overrides of PLANS ('{}' = as is)"
    )
    args = ap.parse_args()
    names = args.models.split(",")
    if args.cmd == "apply":
        apply(names, args.force)
    else:
        rtn_kld(names, args.tokens, None if args.trial is None else json.loads(args.trial))


if __name__ == "__main__":
    main()
