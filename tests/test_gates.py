import json
from pathlib import Path

import pytest

from qwen3_quant.errors import UsageError
from qwen3_quant.eval.gates import check_gates, default_gates, parse_gate_overrides


def test_defaults_loosen_with_fewer_bits():
    limits = [default_gates(b).max_ppl_increase_pct for b in (16, 8, 6, 5, 4, 3, 2)]
    assert limits == sorted(limits)


def test_overrides():
    o = parse_gate_overrides(["ppl=10", "kld=off", "top1=0.5"])
    assert o == {"max_ppl_increase_pct": 10.0, "max_kld_mean": None, "min_top1_agreement": 0.5}
    g = default_gates(4).with_overrides(o)
    assert g.max_ppl_increase_pct == 10 and g.max_kld_mean is None
    with pytest.raises(UsageError, match="bad gate 'speed=3'"):
        parse_gate_overrides(["speed=3"])
    with pytest.raises(UsageError, match="bad gate value"):
        parse_gate_overrides(["ppl=lots"])


def test_check():
    g = default_gates(4)
    ok = check_gates(g, ppl_increase_pct=1.0, kld_mean=0.01, top1_agreement=0.99)
    assert all(r.passed for r in ok) and len(ok) == 3
    bad = check_gates(g, ppl_increase_pct=float("nan"), kld_mean=5.0, top1_agreement=0.1)
    assert not any(r.passed for r in bad)


def test_kld_and_top1_defaults_loosen_with_fewer_bits():
    gates = [default_gates(b) for b in (16, 8, 6, 5, 4, 3, 2)]
    kld = [g.max_kld_mean for g in gates]
    top1 = [g.min_top1_agreement for g in gates]
    assert kld == sorted(kld) and top1 == sorted(top1, reverse=True)


def test_defaults_pass_every_artifact_of_the_quality_table():
    """The gates are derived from benchmarks/quality.json (every format and method on the micro
    models): each measured artifact, on each text, passes the default gates of its class."""
    table = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.json"
    rows = [
        (model, label, r)
        for model, rs in json.loads(table.read_text())["models"].items()
        for label, r in rs.items()
    ]
    measured = [x for x in rows if "scores" in x[2]]
    assert len(measured) >= 40, "the quality table lost its rows"
    for model, label, r in measured:
        for text, s in r["scores"].items():
            res = check_gates(
                default_gates(r["bits"]),
                ppl_increase_pct=s["ppl_increase_pct"],
                kld_mean=s["kld_mean"],
                top1_agreement=s["top1"],
            )
            failed = [g for g in res if not g.passed]
            assert not failed, f"{model} {label} on {text} fails the {r['bits']}-bit gates: {failed}"
