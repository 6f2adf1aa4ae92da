"""Log-softmax statistics over the vocabulary, fed one slice of vocabulary columns at a time.

A window's full logits are positions x vocabulary (2,048 x 151,936 floats is 1.2 GB in float32);
the reference needs only each position's log-sum-exp, the target token's logit and the k most
likely tokens. :class:`VocabStream` keeps exactly those while the output head is applied a slice
of rows at a time, so the working set is positions x slice. numpy only; the results equal
:func:`.metrics.log_softmax`, :func:`.metrics.target_logprobs` and :func:`.metrics.topk` of the
whole row up to float rounding.
"""

from __future__ import annotations

import numpy as np

_ROW_BLOCK = 256


class VocabStream:
    """Running statistics of ``n_pos`` rows of logits whose columns arrive in slices."""

    def __init__(self, n_pos: int, k: int, targets: np.ndarray | None = None):
        self.k = k
        self.targets = None if targets is None else np.asarray(targets, dtype=np.int64)
        self.max = np.full(n_pos, -np.inf, dtype=np.float32)
        self.sum = np.zeros(n_pos, dtype=np.float64)  # sum of exp(logit - max), as log_softmax sums
        self.target_logit = np.full(n_pos, np.nan, dtype=np.float32)
        self.top_idx = np.zeros((n_pos, 0), dtype=np.int64)
        self.top_val = np.zeros((n_pos, 0), dtype=np.float32)
        self.n_cols = 0

    def update(self, logits: np.ndarray, start: int) -> None:
        """Add the columns ``start .. start + logits.shape[1]`` of every row."""
        x = np.asarray(logits, dtype=np.float32)
        stop = start + x.shape[1]
        new_max = np.maximum(self.max, x.max(axis=1))
        rescale = np.exp((self.max - new_max).astype(np.float64))
        self.sum = self.sum * rescale + np.exp(x - new_max[:, None]).sum(axis=1, dtype=np.float64)
        self.max = new_max
        if self.targets is not None:
            inside = (self.targets >= start) & (self.targets < stop)
            rows = np.nonzero(inside)[0]
            self.target_logit[rows] = x[rows, self.targets[rows] - start]
        if self.k:
            self._merge_topk(x, start)
        self.n_cols = max(self.n_cols, stop)

    def _merge_topk(self, x: np.ndarray, start: int) -> None:
        k = min(self.k, x.shape[1])
        idx = np.empty((x.shape[0], k), dtype=np.int64)
        for r in range(0, x.shape[0], _ROW_BLOCK):  # argpartition's index array is rows x columns
            idx[r : r + _ROW_BLOCK] = np.argpartition(-x[r : r + _ROW_BLOCK], k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(x, idx, axis=1)
        cand_val = np.concatenate([self.top_val, vals], axis=1)
        cand_idx = np.concatenate([self.top_idx, idx.astype(np.int64) + start], axis=1)
        keep = min(self.k, cand_val.shape[1])
        sel = np.argpartition(-cand_val, keep - 1, axis=1)[:, :keep]
        self.top_val = np.take_along_axis(cand_val, sel, axis=1)
        self.top_idx = np.take_along_axis(cand_idx, sel, axis=1)

    def logprobs_of(self, logits: np.ndarray) -> np.ndarray:
        """Log-probabilities of logits from these rows (``[n_pos]`` or ``[n_pos, m]``), computed
        as :func:`.metrics.log_softmax` does: shift by the row maximum first, then subtract."""
        log_sum = np.log(self.sum).astype(np.float32)
        if logits.ndim == 2:
            return (logits - self.max[:, None]) - log_sum[:, None]
        return (logits - self.max) - log_sum

    def target_logprobs(self) -> np.ndarray:
        if self.targets is None:
            raise ValueError("no targets were given")
        if np.isnan(self.target_logit).any():
            raise ValueError("a target token lies outside the columns seen")
        return self.logprobs_of(self.target_logit)

    def topk(self) -> tuple[np.ndarray, np.ndarray]:
        """The k most likely tokens per row, most likely first: ``(indices int32, logprobs float32)``."""
        order = np.argsort(-self.top_val, axis=1, kind="stable")
        idx = np.take_along_axis(self.top_idx, order, axis=1).astype(np.int32)
        lp = self.logprobs_of(np.take_along_axis(self.top_val, order, axis=1))
        return idx, lp.astype(np.float32)
