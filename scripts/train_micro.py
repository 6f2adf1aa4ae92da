"""Train the micro Qwen3 (dense) and micro Qwen3-MoE that ship with qwen3-quant.

Deterministic: the same corpus, seed and step count give the same tokenizer and weights on the
same torch build. Everything is read from ``shared/data/corpus-en`` (Gutenberg headers and
footers stripped); one book is held out for perplexity.

    python scripts/train_micro.py tokenizer
    python scripts/train_micro.py train --arch dense
    python scripts/train_micro.py train --arch moe
    python scripts/train_micro.py report           # held-out / wikitext-2 / unigram table

Outputs go to ``qwen3_quant/assets/micro/{Qwen3-Micro,Qwen3-Micro-MoE}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers' BPE trainer: one thread, one answer
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen3_quant.textdata import gutenberg_books, read_text, shared_data_dir  # noqa: E402

OUT = ROOT / "qwen3_quant" / "assets" / "micro"
TOK_DIR = OUT / "_tokenizer"
HELD_OUT_BOOK = "pg43_stevenson_jekyll_and_hyde"
SEED = 1234
BPE_VOCAB = 8100  # + 26 added tokens = 8126 tokens in 8192 embedding rows, padded like real Qwen3

# Qwen3's added tokens, in Qwen3's order; the second field is ``special`` as Qwen3 sets it.
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
QWEN2_PRETOKENIZE_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

ARCHS = {
    "dense": {
        "name": "Qwen3-Micro",
        "steps": 500,
        "config": dict(
            model_type="qwen3",
            architectures=["Qwen3ForCausalLM"],
            hidden_size=256,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
            vocab_size=8192,
            tie_word_embeddings=True,
            max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            rms_norm_eps=1e-6,
        ),
    },
    "moe": {
        "name": "Qwen3-Micro-MoE",
        "steps": 350,
        "config": dict(
            model_type="qwen3_moe",
            architectures=["Qwen3MoeForCausalLM"],
            hidden_size=256,
            intermediate_size=768,
            moe_intermediate_size=256,
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            router_aux_loss_coef=0.01,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
            vocab_size=8192,
            tie_word_embeddings=False,
            max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            rms_norm_eps=1e-6,
        ),
    },
}
SEQ_LEN = 512
BATCH = 8
LR = 3e-3


def build_tokenizer() -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    books = gutenberg_books()
    train_texts = [t for k, t in books.items() if k != HELD_OUT_BOOK]
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(train_texts, trainer=trainer)
    from tokenizers import AddedToken

    for content, special in ADDED_TOKENS:
        added = AddedToken(
            content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False
        )
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    template = (ROOT / "scripts" / "chat_template.jinja").read_text()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=ARCHS["dense"]["config"]["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
        add_bos_token=False,
        split_special_tokens=False,
    )
    fast.chat_template = template
    if TOK_DIR.exists():
        shutil.rmtree(TOK_DIR)
    fast.save_pretrained(TOK_DIR)
    cfg_path = TOK_DIR / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (TOK_DIR / "chat_template.jinja").unlink(missing_ok=True)
    print(f"tokenizer: {tok.get_vocab_size()} tokens -> {TOK_DIR}")


def _load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOK_DIR)


def _token_stream(tok, texts: list[str]):
    import numpy as np

    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    ids: list[int] = []
    for t in texts:
        ids.extend(tok(t, add_special_tokens=False)["input_ids"])
        ids.append(eot)
    return np.asarray(ids, dtype=np.int32)


def _corpus_tokens(tok):
    import numpy as np

    cache = OUT / "_cache"
    cache.mkdir(parents=True, exist_ok=True)
    f = cache / "tokens.npz"
    if f.exists():
        d = np.load(f)
        return d["train"], d["held"]
    books = gutenberg_books()
    train = _token_stream(tok, [t for k, t in sorted(books.items()) if k != HELD_OUT_BOOK])
    held = _token_stream(tok, [books[HELD_OUT_BOOK]])
    np.savez(f, train=train, held=held)
    return train, held


def _make_config(arch: str, tok):
    from transformers import AutoConfig

    spec = dict(ARCHS[arch]["config"])
    model_type = spec.pop("model_type")
    spec.pop("architectures")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    return AutoConfig.for_model(model_type, bos_token_id=eot, eos_token_id=im_end, pad_token_id=None, **spec)


def train(arch: str, steps: int | None = None) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    tok = _load_tokenizer()
    train_ids, held_ids = _corpus_tokens(tok)
    config = _make_config(arch, tok)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    steps = steps or ARCHS[arch]["steps"]
    print(f"{arch}: {n_params / 1e6:.2f}M params, {len(train_ids) / 1e6:.2f}M train tokens, {steps} steps")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, 0.95),
    )
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return LR * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    rng = np.random.default_rng(SEED)
    t0 = time.time()
    for step in range(steps):
        starts = rng.integers(0, len(train_ids) - SEQ_LEN - 1, size=BATCH)
        batch = torch.from_numpy(np.stack([train_ids[s : s + SEQ_LEN] for s in starts]).astype(np.int64))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        kwargs = {"output_router_logits": True} if arch == "moe" else {}
        out = model(input_ids=batch, labels=batch, **kwargs)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            print(
                f"step {step:5d} loss {out.loss.item():.4f} lr {lr_at(step):.2e} {time.time() - t0:7.1f}s",
                flush=True,
            )
    model.eval()
    dest = OUT / ARCHS[arch]["name"]
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.to(torch.bfloat16).save_pretrained(tmp)
    for f in TOK_DIR.iterdir():
        shutil.copy2(f, tmp / f.name)
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[config.eos_token_id, config.bos_token_id],
        pad_token_id=config.bos_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
        top_k=20,
    ).save_pretrained(tmp)
    (tmp / "training.json").write_text(
        json.dumps(
            {
                "arch": arch,
                "steps": steps,
                "seq_len": SEQ_LEN,
                "batch": BATCH,
                "lr": LR,
                "seed": SEED,
                "train_tokens": int(len(train_ids)),
                "held_out_book": HELD_OUT_BOOK,
                "params": n_params,
                "train_seconds": round(time.time() - t0, 1),
                "torch": torch.__version__,
            },
            indent=2,
        )
        + "\n"
    )
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    print(f"saved {dest}")


def report() -> None:
    """Perplexity of both micro models on held-out text and wikitext-2, next to a unigram baseline."""
    import numpy as np

    from qwen3_quant.eval.evaluate import perplexity_only

    tok = _load_tokenizer()
    train_ids, held_ids = _corpus_tokens(tok)
    counts = np.bincount(train_ids, minlength=8192).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    wiki = read_text(shared_data_dir() / "wikitext-2-raw" / "wiki.test.raw")
    held_text = gutenberg_books()[HELD_OUT_BOOK]
    rows = []
    for text_name, text in (("held-out book (Jekyll and Hyde)", held_text), ("wikitext-2 raw test", wiki)):
        ids = np.asarray(tok(text, add_special_tokens=False)["input_ids"])
        row = {"text": text_name, "tokens": int(len(ids))}
        # the unigram baseline scores the same tokens the windows score (all but each window's first)
        scored = np.concatenate([ids[s + 1 : s + SEQ_LEN] for s in range(0, len(ids), SEQ_LEN)])
        row["unigram"] = float(np.exp(-logp[scored].mean()))
        for arch in ("dense", "moe"):
            res = perplexity_only(OUT / ARCHS[arch]["name"], text, ctx=SEQ_LEN)
            row[ARCHS[arch]["name"]] = res.perplexity
        rows.append(row)
        print(row, flush=True)
    (OUT / "perplexity.json").write_text(json.dumps(rows, indent=2) + "\n")
    write_readmes(rows)


def write_readmes(rows: list[dict]) -> None:
    """The micro models' README: what they are, how they were trained, their perplexities."""
    lines = [
        "# The micro Qwen3 models",
        "",
        "Two small Qwen3 checkpoints trained by `scripts/train_micro.py` on the public-domain Gutenberg",
        "corpus of `shared/data/corpus-en` (headers and footers stripped, one book held out), so that",
        "quantisation errors show as real perplexity changes. They ship with the package for the tests",
        "and the offline demo (`qwen3-quant build`, `qwen3-quant eval Qwen3-Micro`).",
        "",
        "| model | class | layers | hidden | heads / kv | head_dim | feed-forward | params | steps | train time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arch in ("dense", "moe"):
        d = OUT / ARCHS[arch]["name"]
        t = json.loads((d / "training.json").read_text())
        c = json.loads((d / "config.json").read_text())
        ffn = (
            f"{c.get('num_experts') or c['num_local_experts']} experts x {c['moe_intermediate_size']}, top-{c['num_experts_per_tok']}"
            if arch == "moe"
            else str(c["intermediate_size"])
        )
        lines.append(
            f"| {ARCHS[arch]['name']} | {c['architectures'][0]} | {c['num_hidden_layers']} | "
            f"{c['hidden_size']} | {c['num_attention_heads']} / {c['num_key_value_heads']} | {c['head_dim']} | "
            f"{ffn} | {t['params'] / 1e6:.2f}M | {t['steps']} x {t['batch']} x {t['seq_len']} tokens | "
            f"{t['train_seconds'] / 60:.0f} min |"
        )
    lines += [
        "",
        "Both use a byte-level BPE tokenizer trained on the same corpus (8,126 tokens in 8,192 embedding",
        "rows, padded like real Qwen3's 151,669 tokens in 151,936 rows), Qwen2's pre-tokenizer, Qwen3's",
        "special tokens and a Qwen3-style chat template with `enable_thinking`; rope theta 1e6, bf16 weights.",
        "The dense model ties its embeddings (like Qwen3-0.6B/1.7B/4B), the MoE model does not (like",
        "Qwen3-30B-A3B). Hidden and feed-forward sizes are multiples of 256, so every GGUF K-quant and group",
        "size 128 apply. Train time is the wall time on the 2-core machine that trained them, shared",
        "with other jobs at the time (about 2 s per step when idle).",
        "",
        "## Perplexity",
        "",
        f"Fixed protocol of `qwen3_quant/eval/protocol.py`, windows of {SEQ_LEN} tokens. The unigram baseline",
        "is the training tokens' add-one smoothed unigram distribution, scored on the same tokens.",
        "",
        "| text | tokens | unigram | Qwen3-Micro | Qwen3-Micro-MoE |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['text']} | {r['tokens']:,} | {r['unigram']:.1f} | {r['Qwen3-Micro']:.1f} | "
            f"{r['Qwen3-Micro-MoE']:.1f} |"
        )
    lines += salient_section()
    lines += [
        "",
        "Reproduce: `python scripts/train_micro.py tokenizer && python scripts/train_micro.py train --arch dense",
        "&& python scripts/train_micro.py train --arch moe && python scripts/salient_channels.py apply",
        "&& python scripts/train_micro.py report`.",
        "",
    ]
    (OUT / "README.md").write_text("\n".join(lines))


def salient_section() -> list[str]:
    """What ``scripts/salient_channels.py`` did to each model, from its record in ``training.json``."""
    recs = {}
    for arch in ("dense", "moe"):
        t = json.loads((OUT / ARCHS[arch]["name"] / "training.json").read_text())
        if "salient_channels" in t:
            recs[ARCHS[arch]["name"]] = t["salient_channels"]
    if not recs:
        return []
    lines = [
        "",
        "## Salient channels",
        "",
        "Trained this small, the models had no outlier channels, so 4-bit rounding barely touched them",
        "(round-to-nearest Int4 KLD about 4e-4 dense, 1.5e-3 MoE; real Qwen3 at 4 bits is around 1e-2) and",
        "activation-aware methods had nothing to protect. Real LLMs have a few input channels with very",
        'large activations ("massive activations"); `scripts/salient_channels.py` gives the trained models',
        "such channels **exactly, without changing their function** (`qwen3_quant/testing/salient.py`):",
        "",
        "- in every layer, the `input_layernorm` and `post_attention_layernorm` weight of a few hidden",
        "  channels times `s`, and the matching input columns of every projection reading that norm",
        "  (q/k/v; gate/up, or the MoE router and every expert's gate/up) divided by `s`;",
        "- a few `v_proj` output rows times `s`, the `o_proj` input columns reading them (every query head",
        "  of the KV group) divided by `s`; a few `up_proj` rows (every expert's, for MoE) times `s`, the",
        "  matching `down_proj` columns divided by `s`.",
        "",
        "The scales are powers of two, so each pair cancels exactly in floating point: the logits on",
        "held-out text equal the original model's (maximum absolute difference below). The same",
        "channels in every layer, like real LLMs' massive activations, drawn by a seeded generator.",
        "Rounding now loses the small weights in those columns while the activations they multiply are",
        "large: round-to-nearest pays for it, AWQ / GPTQ / an importance matrix protect them. Chosen over",
        "training longer or wider because it is exact (the trained function, perplexities and tokenizer",
        "are unchanged), takes seconds, and gives the structure activation-aware methods exist for;",
        "longer training was not tried.",
        "",
        "| model | hidden channels (x s) | v_proj rows (x s) | up_proj rows (x s) | max abs logit diff |",
        "|---|---|---|---|---|",
    ]
    for name, r in recs.items():
        p = r["plan"]
        lines.append(
            f"| {name} | {p['hidden_channels']} (x{p['hidden_scale']:g}) | {p['v_rows']} (x{p['v_scale']:g}) | "
            f"{p['ffn_rows']} (x{p['ffn_scale']:g}) | {r['check']['max_abs_logit_diff']:g} "
            f"({r['check']['tokens']} tokens) |"
        )
    lines += [
        "",
        "Fake-quantised round-to-nearest Int4 (asymmetric, group 128, every decoder linear layer but the",
        "router) on the first 2,048 held-out tokens (`python scripts/salient_channels.py rtn-kld`):",
        "",
        "| model | before: KLD / top-1 | after: KLD / top-1 |",
        "|---|---|---|",
        "| Qwen3-Micro | 4.3e-4 / 0.985 | 8.7e-3 / 0.931 |",
        "| Qwen3-Micro-MoE | 1.5e-3 / 0.979 | 1.09e-2 / 0.906 |",
        "",
        "Measured by the real runtimes: `benchmarks/quality.md` (every format and method), `benchmarks/quality_auto.md`",
        "(GGUF auto mixes), `benchmarks/gptq.md`, `benchmarks/calibration.md`, `benchmarks/onnx.md`, `benchmarks/mlx.md`",
        "and `benchmarks/gguf.md` (importance matrix); `benchmarks/README.md` says which sections predate the salient channels.",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("tokenizer")
    t = sub.add_parser("train")
    t.add_argument("--arch", choices=sorted(ARCHS), required=True)
    t.add_argument("--steps", type=int)
    sub.add_parser("report")
    sub.add_parser("readme", help="rewrite the README from perplexity.json and training.json")
    args = ap.parse_args()
    if args.cmd == "tokenizer":
        build_tokenizer()
    elif args.cmd == "train":
        train(args.arch, args.steps)
    elif args.cmd == "readme":
        write_readmes(json.loads((OUT / "perplexity.json").read_text()))
    else:
        report()


if __name__ == "__main__":
    main()
