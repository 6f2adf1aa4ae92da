"""GGUF options, names and estimates: fast, no model, no llama.cpp."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qwen3_quant.catalog import catalog
from qwen3_quant.errors import UsageError
from qwen3_quant.formats import get_format
from qwen3_quant.formats.gguf.config import DEFAULT_MAX_SHARD, GGUFConfig, nominal_bits, parse_size
from qwen3_quant.formats.gguf.types import FILE_TYPES

FMT = get_format("gguf")


def test_defaults_and_case_insensitive_types():
    cfg = FMT.parse_options({})
    assert cfg.types == ("Q4_K_M",) and cfg.calib == "default" and cfg.max_shard_size == DEFAULT_MAX_SHARD
    assert DEFAULT_MAX_SHARD < 50 * 1000**3  # below the Hub's per-file limit
    cfg = FMT.parse_options({"types": ["q8_0", " Q6_k", "Q4_K_M", "q8_0"]})
    assert cfg.types == ("Q8_0", "Q6_K", "Q4_K_M")
    assert FMT.parse_options({"types": "Q8_0,Q2_K"}).types == ("Q8_0", "Q2_K")


def test_unknown_type_lists_the_valid_ones():
    with pytest.raises(UsageError) as e:
        FMT.parse_options({"types": ["Q4_K_X"]})
    assert "Q4_K_X" in e.value.message
    assert all(t in e.value.hint for t in ("Q4_K_M", "IQ4_XS", "Q8_0", "BF16", "Q2_K"))


@pytest.mark.parametrize(
    "option,flag",
    [
        ("precision", "--precision"),
        ("bits", "--bits"),
        ("group_size", "--group-size"),
        ("sym", "--sym/--asym"),
        ("act_order", "--act-order"),
        ("block_size", "--block-size"),
        ("starved_experts", "--starved-experts"),
    ],
)
def test_options_of_other_formats_are_refused(option, flag):
    with pytest.raises(UsageError) as e:
        FMT.parse_options({option: 4})
    assert flag in e.value.message and "--format gguf" in e.value.message


def test_imatrix_defaults_by_bits():
    cfg = FMT.parse_options(
        {"types": ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K", "BF16"]}
    )
    assert [t for t in cfg.types if cfg.uses_imatrix(t)] == ["Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K"]
    on = FMT.parse_options({"types": ["Q8_0", "Q6_K", "BF16"], "imatrix": True})
    # Q8_0's and the float types' kernels take no importance matrix
    assert [t for t in on.types if on.uses_imatrix(t)] == ["Q6_K"]
    off = FMT.parse_options({"types": ["Q2_K"], "imatrix": False})
    assert not off.needs_imatrix


def test_calibration_options(caplog):
    # unused calibration is not an error (a build file gives one to every cell), but it is said
    assert FMT.parse_options({"types": ["Q4_K_M"], "imatrix": False, "calib": "text"}).calib == "text"
    assert "--no-imatrix" in caplog.text
    FMT.parse_options({"types": ["Q8_0"], "calib_samples": 8})
    assert "none of Q8_0" in caplog.text
    with pytest.raises(UsageError, match="unknown calibration mix"):
        FMT.parse_options({"types": ["Q4_K_M"], "calib": "no-such-mix"})
    with pytest.raises(UsageError, match="at least 1"):
        FMT.parse_options({"calib_samples": 0})
    cfg = FMT.parse_options({"types": ["Q3_K_M"], "calib": "text", "calib_samples": 8})
    assert (cfg.calib, cfg.calib_samples) == ("text", 8)


def test_sizes():
    assert parse_size("45G") == 45 * 10**9
    assert parse_size("500M") == 500 * 10**6
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5kb") == 1500
    assert parse_size("123") == 123
    for bad in ("", "G", "12X", "-1G", "0"):
        with pytest.raises(UsageError):
            parse_size(bad)
    assert FMT.parse_options({"max_shard_size": "2M"}).max_shard_size == 2_000_000


def test_names_bits_and_variants():
    cfg = GGUFConfig(types=("Q8_0", "Q4_K_M"))
    assert FMT.artifact_name("Qwen3-8B", cfg) == "Qwen3-8B-GGUF"
    assert FMT.variants(cfg) == ["Q8_0", "Q4_K_M"]
    expect = {"Q8_0": 8, "Q6_K": 6, "Q5_K_M": 5, "Q5_K_S": 5, "Q4_K_M": 4, "Q4_K_S": 4, "IQ4_XS": 4}
    expect |= {"Q3_K_M": 3, "Q3_K_L": 3, "Q2_K": 2, "F16": 16, "BF16": 16}
    for t, b in expect.items():
        assert nominal_bits(t) == FMT.nominal_bits(t) == b
    assert set(expect) <= set(FILE_TYPES)


def test_estimates_order_and_scale():
    a = catalog()["Qwen3-8B"].arch
    sizes = {t: FMT.estimate(a, t).artifact_bytes for t in ("BF16", "Q8_0", "Q6_K", "Q4_K_M", "Q2_K")}
    assert sizes["BF16"] > sizes["Q8_0"] > sizes["Q6_K"] > sizes["Q4_K_M"] > sizes["Q2_K"]
    assert 16.0e9 < sizes["BF16"] < 16.6e9  # 8.19B parameters in 2 bytes
    assert 4.7e9 < sizes["Q4_K_M"] < 5.3e9
    # the importance matrix runs the model: quantising Q4_K_M needs the model in memory, Q8_0 does not
    assert FMT.estimate(a, "Q4_K_M").quantise_peak_bytes > FMT.estimate(a, "Q8_0").quantise_peak_bytes


def test_format_import_stays_light():
    code = (
        "import sys, qwen3_quant.formats.gguf as g; g.FORMAT.parse_options({'types': ['Q4_K_M']});"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'gguf') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
