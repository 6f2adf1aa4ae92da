"""GPTQ / AWQ options, names and variants: checked before any heavy work."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from qwen3_quant.errors import UsageError
from qwen3_quant.formats import get_format
from qwen3_quant.formats.base import check_contract
from qwen3_quant.formats.gptqmodel.config import parse_threshold, threshold_tokens


@pytest.fixture(params=["gptq", "awq"])
def fmt(request):
    return get_format(request.param)


def test_defaults_follow_qwens_releases():
    g = get_format("gptq").parse_options({})
    a = get_format("awq").parse_options({})
    assert (g.bits, g.group_size, g.sym, g.act_order, g.calib) == (4, 128, True, False, "default")
    assert (a.bits, a.group_size, a.sym, a.act_order) == (4, 128, False, False)  # AWQ: zero points
    assert g.starved_experts == "rtn" and g.starved_threshold == "0.5%" and not g.starved_experts_given


@pytest.mark.parametrize(
    "fmt_name, options, name",
    [
        ("gptq", {}, "Qwen3-8B-GPTQ-Int4"),
        ("gptq", {"bits": 8}, "Qwen3-8B-GPTQ-Int8"),
        ("awq", {}, "Qwen3-8B-AWQ"),
        ("gptq", {"group_size": 32, "sym": False}, "Qwen3-8B-GPTQ-Int4-g32-asym"),
        ("gptq", {"act_order": True}, "Qwen3-8B-GPTQ-Int4-act-order"),
        ("awq", {"sym": True, "group_size": 64}, "Qwen3-8B-AWQ-g64-sym"),
        ("gptq", {"sym": True, "act_order": False}, "Qwen3-8B-GPTQ-Int4"),
    ],
)
def test_artifact_names(fmt_name, options, name):
    f = get_format(fmt_name)
    assert f.artifact_name("Qwen3-8B", f.parse_options(options)) == name


def test_one_variant_per_run_with_its_bits(fmt):
    c = fmt.parse_options({"bits": 4, "group_size": 64})
    assert fmt.variants(c) == ["W4g64"]
    assert fmt.nominal_bits("W8g64") == 8 and fmt.nominal_bits("W4g128") == 4
    check_contract(fmt)  # every method of the format contract is there
    assert fmt.available()


@pytest.mark.parametrize(
    "options, words",
    [
        ({"types": ["Q4_K_M"]}, "--type does not apply"),
        ({"precision": "int4"}, "--precision does not apply"),
        ({"block_size": 32}, "--block-size does not apply"),
        ({"imatrix": True}, "--imatrix does not apply"),
        ({"max_shard_size": "4G"}, "--max-shard-size does not apply"),
        ({"accuracy_level": 4}, "--accuracy-level does not apply"),
        ({"bits": 3}, "cannot use --bits 3"),
        ({"bits": 16}, "cannot use --bits 16"),
        ({"group_size": 256}, "cannot use --group-size 256"),
        ({"group_size": -1}, "cannot use --group-size -1"),
        ({"calib": "no-such-mix"}, "unknown calibration mix"),
        ({"calib_samples": 0}, "bad --calib-samples"),
        ({"starved_experts": "ignore"}, "unknown --starved-experts policy"),
        ({"starved_threshold": "lots"}, "bad --starved-threshold"),
        ({"starved_threshold": "150%"}, "bad --starved-threshold"),
    ],
)
def test_bad_options_name_the_problem(fmt, options, words):
    with pytest.raises(UsageError) as err:
        fmt.parse_options(options)
    assert words in err.value.one_line()


def test_awq_is_4_bit_only():
    assert get_format("gptq").parse_options({"bits": 8}).bits == 8
    with pytest.raises(UsageError, match="AWQ supports --bits 4 only") as err:
        get_format("awq").parse_options({"bits": 8})
    assert "--format gptq --bits 8" in err.value.one_line()


def test_act_order_is_gptq_only():
    assert get_format("gptq").parse_options({"act_order": True}).act_order
    assert not get_format("awq").parse_options({"act_order": False}).act_order
    with pytest.raises(UsageError, match="--act-order does not apply to AWQ"):
        get_format("awq").parse_options({"act_order": True})


def test_starved_options():
    c = get_format("gptq").parse_options({"starved_experts": "Calibrate-All", "starved_threshold": "32"})
    assert (c.starved_experts, c.starved_threshold, c.starved_experts_given) == ("calibrate-all", "32", True)
    assert parse_threshold("0.50%") == "0.5%" and parse_threshold(16.0) == "16"
    assert threshold_tokens("0.5%", 65536) == pytest.approx(327.68)
    assert threshold_tokens("40", 65536) == 40


def test_recipe_key_ignores_how_the_mix_was_named():
    f = get_format("gptq")
    a, b = f.parse_options({"calib": "default"}), f.parse_options({"calib_samples": 7})
    assert a.key() == b.key()  # the calibration tokens' hash tells these apart instead
    assert a.key() != f.parse_options({"bits": 8}).key()


def test_cli_rejects_bad_options_before_loading_anything(monkeypatch):
    from qwen3_quant.cli import main

    for name in [m for m in sys.modules if m == "gptqmodel" or m.startswith("gptqmodel.")]:
        monkeypatch.delitem(sys.modules, name)  # an earlier test may have imported it; restored after

    r = CliRunner().invoke(main, ["quantize", "Qwen3-Micro", "--format", "awq", "--act-order"])
    assert r.exit_code == 2 and "--act-order does not apply to AWQ" in r.output
    r = CliRunner().invoke(main, ["quantize", "Qwen3-Micro", "--format", "gptq", "--type", "Q4_K_M"])
    assert r.exit_code == 2 and "--type does not apply to GPTQ" in r.output
    r = CliRunner().invoke(main, ["quantize", "Qwen3-Micro", "--format", "gptq", "--bits", "5"])
    assert r.exit_code == 2 and "--bits 4 or --bits 8" in r.output
    assert "gptqmodel" not in sys.modules
