"""Scoring windows, and the on-disk store of the unquantised model's top-k log-probabilities.

The reference is computed once per (model, text, ctx, k, token count) and reused for every
artifact of that model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_output
from ..working_set import SCORE_BLOCK
from . import metrics
from .protocol import PROTOCOL_VERSION, Window

log = logging.getLogger(__name__)


@dataclass
class Scores:
    nll: np.ndarray  # [n_scored]
    kld: np.ndarray | None = None
    top1_same: np.ndarray | None = None
    topk_idx: np.ndarray | None = None
    topk_lp: np.ndarray | None = None

    @property
    def perplexity(self) -> float:
        return metrics.perplexity(self.nll)


def score_windows(
    runner,
    tokens: np.ndarray,
    windows: list[Window],
    *,
    ref: Scores | None = None,
    keep_topk: int = 0,
    progress=None,
    stage: str = "scoring windows",
) -> Scores:
    """Run each window through ``runner``; compare with ``ref`` when given; keep top-k when asked;
    report each window to ``progress`` as ``stage``.

    The runner hands out a window's logits in blocks of positions where its runtime can
    (``Runner.logits_blocks``), and they are scored ``SCORE_BLOCK`` positions at a time, so the
    scorer's working set is block x vocabulary, not several window x vocabulary arrays."""
    nll, kld, same, tk_i, tk_l = [], [], [], [], []
    off = 0
    for i, w in enumerate(windows):
        ids = tokens[w.start : w.end]
        for start, logits in runner.logits_blocks(ids.tolist()):
            stop = min(start + len(logits), w.scored)  # the window's last position predicts nothing
            for a in range(start, stop, SCORE_BLOCK):
                b = min(a + SCORE_BLOCK, stop)
                lp = metrics.log_softmax(logits[a - start : b - start])
                nll.append(-metrics.target_logprobs(lp, ids[a + 1 : b + 1]))
                if ref is not None:
                    r_i, r_l = ref.topk_idx[off + a : off + b], ref.topk_lp[off + a : off + b]
                    kld.append(metrics.kld_topk(r_i, r_l, lp))
                    same.append(lp.argmax(axis=-1) == r_i[:, 0])
                if keep_topk:
                    c, d = metrics.topk(lp, keep_topk)
                    tk_i.append(c)
                    tk_l.append(d)
                del lp
            del logits
        off += w.scored
        if progress:
            progress(stage, i + 1, len(windows))

    def cat(xs):
        return np.concatenate(xs) if xs else None

    return Scores(np.concatenate(nll) if nll else np.zeros(0), cat(kld), cat(same), cat(tk_i), cat(tk_l))


def reference_path(
    ref_dir: Path, model_fp: str, text_sha: str, ctx: int, k: int, n_tokens: int, dtype: str = "float32"
) -> Path:
    """Where a reference is stored; one computed with bf16 layers is stored apart from fp32's."""
    tail = "" if dtype == "float32" else f"-{dtype}"
    return (
        Path(ref_dir)
        / f"ref-v{PROTOCOL_VERSION}-{model_fp}-{text_sha[:16]}-ctx{ctx}-k{k}-n{n_tokens}{tail}.npz"
    )


def load_reference(path: Path) -> Scores | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as d:
            return Scores(nll=d["nll"], topk_idx=d["topk_idx"], topk_lp=d["topk_lp"])
    except (OSError, ValueError, KeyError) as exc:  # a damaged cache entry is recomputed
        log.warning("ignoring unreadable reference %s (%s)", path, exc)
        return None


def save_reference(path: Path, scores: Scores) -> None:
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, nll=scores.nll.astype(np.float32), topk_idx=scores.topk_idx, topk_lp=scores.topk_lp)
