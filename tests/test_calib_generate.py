"""The ``generate`` source kind on the micro model: deterministic per seed, cached, resumable,
bounded in time."""

from __future__ import annotations

import pytest

from qwen3_quant.calib import parse_mix
from qwen3_quant.errors import CalibrationError


@pytest.fixture(autouse=True)
def one_thread():
    """The micro model decodes token by token: one thread is fastest on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen_mix(thinking: bool, rows: int = 3, max_seconds: float = 300, seed: int = 0):
    src = {
        "name": "written",
        "kind": "generate",
        "path": "packaged:math-chat.jsonl.gz",
        "thinking": thinking,
        "rows": rows,
        "max_new_tokens": 12,
        "max_seconds": max_seconds,
        "share": 1.0,
    }
    return parse_mix({"name": "g", "samples": 2, "seq_len": 48, "seed": seed, "source": [src]})


def test_written_rows_are_deterministic_cached_and_rendered(micro_dense, tmp_path, monkeypatch):
    a = gen_mix(False).build(micro_dense, cache_dir=tmp_path / "a")
    b = gen_mix(False).build(micro_dense, cache_dir=tmp_path / "b")  # written again, elsewhere
    assert a.sha256 == b.sha256
    note = a.summary()["sources"]["written"]
    assert note["generated"] == note["of"] == 3 and note["seconds"] > 0
    assert all(t.startswith("<|im_start|>user\n") and "<think>\n\n</think>\n\n" in t for t in a.texts)
    assert gen_mix(False, seed=1).build(micro_dense, cache_dir=tmp_path / "a").sha256 != a.sha256

    import qwen3_quant.calib.generate as generate

    def no_model(*args, **kwargs):
        raise AssertionError("the cached rows should have been used")

    monkeypatch.setattr(generate, "_write_rows", no_model)
    again = gen_mix(False).build(micro_dense, cache_dir=tmp_path / "a")
    assert again.sha256 == a.sha256 and again.summary()["sources"]["written"]["seconds"] == 0


def test_a_killed_run_resumes_from_its_cache(micro_dense, tmp_path):
    full = gen_mix(True).build(micro_dense, cache_dir=tmp_path / "full")
    (cache,) = (tmp_path / "full" / "calib-generated").glob("written-*.jsonl")
    lines = cache.read_text().splitlines(keepends=True)
    part = tmp_path / "part" / "calib-generated" / cache.name
    part.parent.mkdir(parents=True)
    part.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed in the middle of row 2
    resumed = gen_mix(True).build(micro_dense, cache_dir=tmp_path / "part")
    assert resumed.sha256 == full.sha256 and part.read_text() == cache.read_text()


def test_time_bound(micro_dense, tmp_path):
    with pytest.raises(CalibrationError, match="wrote nothing within max_seconds"):
        gen_mix(False, max_seconds=0).build(micro_dense, cache_dir=tmp_path)
