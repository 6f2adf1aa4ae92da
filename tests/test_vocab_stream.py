"""Log-softmax statistics fed a slice of vocabulary columns at a time equal the whole-row maths."""

import numpy as np
import pytest

from qwen3_quant.eval import metrics
from qwen3_quant.eval.vocab_stream import VocabStream


def _stream(logits, k, targets, slice_cols):
    st = VocabStream(logits.shape[0], k, targets)
    for s in range(0, logits.shape[1], slice_cols):
        st.update(logits[:, s : s + slice_cols], s)
    return st


@pytest.mark.parametrize("slice_cols", [1, 3, 7, 64, 1000])
def test_sliced_statistics_equal_whole_row(slice_cols):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((300, 1000)) * 4).astype(np.float32)
    targets = rng.integers(0, 1000, 300)
    lp = metrics.log_softmax(logits)
    st = _stream(logits, 5, targets, slice_cols)
    np.testing.assert_allclose(st.target_logprobs(), metrics.target_logprobs(lp, targets), atol=2e-5)
    idx, vals = st.topk()
    ref_idx, ref_vals = metrics.topk(lp, 5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(vals, ref_vals, atol=2e-5)
    assert idx.dtype == np.int32 and vals.dtype == np.float32


def test_large_logits_do_not_overflow_and_normalise():
    logits = np.array([[1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    st = _stream(logits, 3, np.array([0, 2]), 1)
    probs = np.exp(st.topk()[1].astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(probs, 1.0, rtol=1e-6)
    np.testing.assert_allclose(st.target_logprobs(), [-np.log1p(np.exp(-1.0)), -np.log(3.0)], rtol=1e-6)


def test_k_larger_than_a_slice_and_than_the_vocabulary():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 10)).astype(np.float32)
    idx, vals = _stream(logits, 20, None, 3).topk()
    ref_idx, ref_vals = metrics.topk(metrics.log_softmax(logits), 20)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(vals, ref_vals, atol=1e-6)


def test_target_outside_the_columns_seen_is_an_error():
    st = VocabStream(1, 2, np.array([5]))
    st.update(np.zeros((1, 4), dtype=np.float32), 0)
    with pytest.raises(ValueError, match="outside"):
        st.target_logprobs()
