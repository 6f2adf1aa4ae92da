import numpy as np
import pytest

from qwen3_quant.eval import metrics
from qwen3_quant.eval.protocol import make_windows


def _lp(rng, t=5, v=50, scale=3.0):
    return metrics.log_softmax(rng.normal(size=(t, v)).astype(np.float32) * scale)


def test_log_softmax_normalises():
    lp = _lp(np.random.default_rng(0))
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=1e-5)


def test_topk_sorted_and_correct():
    lp = _lp(np.random.default_rng(1))
    idx, val = metrics.topk(lp, 4)
    assert (np.diff(val, axis=1) <= 0).all()
    np.testing.assert_array_equal(idx[:, 0], lp.argmax(-1))
    np.testing.assert_allclose(val, np.take_along_axis(lp, idx.astype(np.int64), -1))


def test_kld_zero_against_itself():
    lp = _lp(np.random.default_rng(2))
    idx, val = metrics.topk(lp, 8)
    np.testing.assert_allclose(metrics.kld_topk(idx, val, lp), 0.0, atol=1e-7)


def test_kld_full_vocab_equals_true_kl_and_topk_is_a_lower_bound():
    rng = np.random.default_rng(3)
    p, q = _lp(rng), _lp(rng)
    true = (np.exp(p) * (p - q)).sum(-1)
    i_all, v_all = metrics.topk(p, p.shape[1])
    np.testing.assert_allclose(metrics.kld_topk(i_all, v_all, q), true, rtol=1e-4)
    for k in (1, 4, 16):
        i, v = metrics.topk(p, k)
        approx = metrics.kld_topk(i, v, q)
        assert (approx <= true + 1e-6).all() and (approx >= 0).all()


def test_perplexity_of_uniform():
    v = 64
    lp = metrics.log_softmax(np.zeros((10, v), np.float32))
    nll = -metrics.target_logprobs(lp, np.arange(10) % v)
    assert metrics.perplexity(nll) == pytest.approx(v, rel=1e-5)


def test_summary_and_delta():
    s = metrics.summarise_kld(np.array([0.0, 0.1, 0.2, 0.3]), np.array([True, True, False, True]))
    assert s.mean == pytest.approx(0.15) and s.top1_agreement == 0.75 and s.max == pytest.approx(0.3)
    assert metrics.ppl_delta_pct(11.0, 10.0) == pytest.approx(10.0)


def test_windows_cover_every_token_once():
    w = make_windows(10, 4)
    assert [(x.start, x.end) for x in w] == [(0, 4), (4, 8), (8, 10)]
    assert sum(x.scored for x in w) == 10 - 3
    assert make_windows(9, 4)[-1].end == 8  # a final 1-token window scores nothing and is dropped
    with pytest.raises(ValueError):
        make_windows(10, 1)
