"""Pure maths of the evaluation: log-probabilities, perplexity, top-k KL divergence. numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64-accurate float32 arithmetic."""
    x = logits.astype(np.float32, copy=False)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)


def target_logprobs(logprobs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Log-probability of each target token: ``logprobs[t, targets[t]]``."""
    return np.take_along_axis(logprobs, targets[:, None].astype(np.int64), axis=-1)[:, 0]


def topk(logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely tokens per row, most likely first: ``(indices int32, logprobs float32)``."""
    k = min(k, logprobs.shape[-1])
    idx = np.argpartition(-logprobs, k - 1, axis=-1)[:, :k]
    vals = np.take_along_axis(logprobs, idx, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.take_along_axis(idx, order, -1).astype(np.int32), np.take_along_axis(vals, order, -1).astype(
        np.float32
    )


def kld_topk(ref_idx: np.ndarray, ref_lp: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """Per-token KL(P_ref || Q) over the reference's top-k tokens plus one bucket for the rest.

    This is the exact KL divergence between the two distributions coarsened to ``k + 1`` outcomes;
    by the data-processing inequality it never exceeds the full-vocabulary KL, and it is 0 when
    ``logprobs`` equals the reference.
    """
    p = np.exp(ref_lp.astype(np.float64))
    q_lp = np.take_along_axis(logprobs, ref_idx.astype(np.int64), axis=-1).astype(np.float64)
    q = np.exp(q_lp)
    kl = (p * (ref_lp - q_lp)).sum(axis=-1)
    p_rest = np.clip(1.0 - p.sum(axis=-1), 0.0, 1.0)
    q_rest = np.clip(1.0 - q.sum(axis=-1), 1e-12, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rest = np.where(p_rest > 1e-12, p_rest * (np.log(np.maximum(p_rest, 1e-300)) - np.log(q_rest)), 0.0)
    return np.maximum(kl + rest, 0.0)


def perplexity(nll: np.ndarray) -> float:
    return float(np.exp(np.mean(nll))) if len(nll) else float("nan")


@dataclass(frozen=True)
class KLDSummary:
    mean: float
    median: float
    p99: float
    max: float
    top1_agreement: float  # share of tokens whose most likely token matches the reference's


def summarise_kld(kld: np.ndarray, top1_same: np.ndarray) -> KLDSummary:
    if len(kld) == 0:
        return KLDSummary(*(float("nan"),) * 5)
    return KLDSummary(
        mean=float(kld.mean()),
        median=float(np.median(kld)),
        p99=float(np.percentile(kld, 99)),
        max=float(kld.max()),
        top1_agreement=float(np.mean(top1_same)),
    )


def ppl_delta_pct(ppl: float, base_ppl: float) -> float:
    return 100.0 * (ppl / base_ppl - 1.0)
