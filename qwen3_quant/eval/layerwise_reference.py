"""The unquantised model's log-probabilities computed a decoder layer at a time over all windows.

Peak memory is one decoder layer, every window's hidden states (tokens x hidden x 4 bytes), and
one slice of the output head with its logits (window x slice); not the model, and never a
window's full-vocabulary logits. The numbers equal the whole-model reference (transformers in
fp32) up to float rounding when the layers compute in fp32; ``dtype="bfloat16"`` halves the layer
memory at a small, measured cost (benchmarks/memory.md).
"""

from __future__ import annotations

import logging

import numpy as np

from ..checkpoint import inspect_checkpoint
from ..layerwise import LayerwiseModel
from ..working_set import HEAD_SLICE_ROWS
from .protocol import Window
from .reference import Scores
from .vocab_stream import VocabStream

log = logging.getLogger(__name__)


def layerwise_reference(
    model_dir,
    tokens: np.ndarray,
    windows: list[Window],
    *,
    k: int,
    dtype: str = "auto",
    device: str = "cpu",
    slice_rows: int = HEAD_SLICE_ROWS,
    progress=None,
) -> Scores:
    """Per scored token: the negative log-likelihood of the next token and the top-``k``
    log-probabilities, for every window scored from an empty cache (the fixed protocol)."""
    info = inspect_checkpoint(model_dir)
    model = LayerwiseModel(info, dtype=dtype, device=device)
    seqs = [tokens[w.start : w.end].tolist() for w in windows]
    hidden = model.embed(seqs, slice_rows=slice_rows)
    model.run_layers(hidden, progress=progress, label="reference (decoder layers)")
    # the last position of a window predicts nothing that is scored
    hidden = [h[0, :-1] for h in model.final_norm(hidden)]
    streams = [VocabStream(len(s) - 1, k, np.asarray(s[1:])) for s in seqs]
    t = model.torch
    n_rows = model.tensors.n_rows(model.head_name)
    with t.inference_mode():
        for start, rows in model.head_slices(slice_rows):
            for h, st in zip(hidden, streams, strict=True):
                st.update((h @ rows.T).numpy(), start)
            del rows
            if progress:
                progress("reference (output head)", min(start + slice_rows, n_rows), n_rows)
    log.info("reference computed a layer at a time (%s)", ", ".join(sorted(set(model.layer_dtypes))))
    nll = [-st.target_logprobs() for st in streams]
    tops = [st.topk() for st in streams] if k else []

    def cat(xs):
        return np.concatenate(xs) if xs else None

    return Scores(
        nll=np.concatenate(nll) if nll else np.zeros(0, dtype=np.float32),
        topk_idx=cat([a for a, _ in tops]),
        topk_lp=cat([b for _, b in tops]),
    )
