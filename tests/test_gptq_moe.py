"""Expert routing coverage: the statistics on toy counts, and the router hooks on a real tiny MoE."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_quant.formats.gptqmodel.moe import RoutingStats, _selection, count_routed_tokens


def toy_stats(threshold=10.0):
    counts = np.array([[40, 3, 25, 12], [0, 30, 30, 20]])
    return RoutingStats(
        [1, 3], counts, counts * 0.5, tokens=40, top_k=2, threshold=threshold, threshold_spec="10"
    )


def test_starved_experts_and_summary():
    s = toy_stats()
    assert s.starved() == [(1, 1, 3), (3, 0, 0)]
    d = s.summary()
    assert (d["min"], d["median"], d["max"]) == (0, 22.5, 40)
    assert d["expected_per_expert"] == 20.0
    assert d["per_layer"][0] == {"layer": 1, "min": 3, "median": 18.5, "max": 40, "starved": 1}
    assert d["starved"] == [{"layer": 1, "expert": 1, "tokens": 3}, {"layer": 3, "expert": 0, "tokens": 0}]
    assert s.describe_starved() == "layer 1 expert 1 (3 tokens), layer 3 expert 0 (0 tokens)"
    assert s.describe_starved(limit=1).endswith("and 1 more")
    back = RoutingStats.from_summary(d)
    assert back.starved() == s.starved() and back.layers == [1, 3]
    assert toy_stats(threshold=0).starved() == []


def test_selection_from_router_tuple_or_logits():
    import torch

    idx = torch.tensor([[2, 0]])
    w = torch.tensor([[0.7, 0.3]])
    got_idx, got_w = _selection((torch.zeros(1, 4), w, idx), 2, True)
    assert got_idx is idx and got_w is w
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    got_idx, got_w = _selection(logits, 2, True)
    assert got_idx.tolist() == [[1, 3]] and float(got_w.sum()) == pytest.approx(1.0)
    _, raw = _selection(logits, 2, False)
    assert float(raw.sum()) < 1.0


def test_router_hooks_match_the_models_own_router_logits(tiny_model):
    """Counts from the hooks equal top-k of the router logits transformers returns itself."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model("Qwen3-30B-A3B"), dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 8000, size=n).tolist() for n in (17, 33, 8)]
    stats = count_routed_tokens(model, samples, threshold=5)
    k, n_exp = model.config.num_experts_per_tok, model.config.num_experts
    want = np.zeros_like(stats.counts)
    with torch.inference_mode():
        for ids in samples:
            out = model(input_ids=torch.tensor([ids]), output_router_logits=True, use_cache=False)
            for row, logits in enumerate(out.router_logits):
                top = torch.topk(logits.float(), k, dim=-1).indices.reshape(-1)
                want[row] += torch.bincount(top, minlength=n_exp).numpy()
    assert stats.layers == list(range(model.config.num_hidden_layers))
    assert stats.tokens == 58 and stats.top_k == k
    np.testing.assert_array_equal(stats.counts, want)
    assert (stats.counts.sum(axis=1) == 58 * k).all()
    # norm_topk_prob: each token's routing weights sum to one
    np.testing.assert_allclose(stats.weight.sum(axis=1), 58.0, rtol=1e-4)
    assert stats.starved() == [
        (stats.layers[r], int(e), int(want[r, e])) for r, e in zip(*np.nonzero(want < 5), strict=True)
    ]


def test_layerwise_routing_counts_equal_the_whole_model_pass(micro_moe):
    """The worker's layer-at-a-time count gives the same counts as the whole bf16 model."""
    import torch
    from transformers import AutoModelForCausalLM

    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.gptqmodel.moe import count_routed_tokens_layerwise

    rng = np.random.default_rng(1)
    samples = [rng.integers(0, 8000, size=n).tolist() for n in (64, 64, 31)]
    model = AutoModelForCausalLM.from_pretrained(micro_moe, dtype=torch.bfloat16).eval()
    whole = count_routed_tokens(model, samples, threshold=3, threshold_spec="3")
    del model
    seen = []
    layerwise = count_routed_tokens_layerwise(
        inspect_checkpoint(micro_moe),
        samples,
        threshold=3,
        threshold_spec="3",
        progress=lambda d, t: seen.append(d),
    )
    assert layerwise.layers == whole.layers and len(whole.layers) > 0
    np.testing.assert_array_equal(layerwise.counts, whole.counts)
    np.testing.assert_allclose(layerwise.weight, whole.weight, rtol=1e-6)
    assert layerwise.tokens == whole.tokens == 159
    assert layerwise.summary() == whole.summary()
    assert seen[-1] == inspect_checkpoint(micro_moe).arch.num_hidden_layers  # progress: decoder layers
