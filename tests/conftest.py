"""Shared fixtures: tiny shape-faithful variants of the eight models, the bundled micro models,
the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(2, os.cpu_count() or 1)))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("gpu") is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model("Qwen3-30B-A3B")`` -> folder of a random tiny variant, built once per session."""
    from qwen3_quant.testing.tiny import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    built: dict[tuple[str, int], Path] = {}

    def make(name: str, layers: int = 2) -> Path:
        key = (name, layers)
        if key not in built:
            built[key] = build_tiny(name, root / f"{name}-L{layers}", layers=layers)
        return built[key]

    return make


@pytest.fixture(scope="session")
def micro_dense() -> Path:
    from qwen3_quant.catalog import bundled_models

    return bundled_models()["Qwen3-Micro"]


@pytest.fixture(scope="session")
def micro_moe() -> Path:
    from qwen3_quant.catalog import bundled_models

    return bundled_models()["Qwen3-Micro-MoE"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    from qwen3_quant.textdata import shared_data_dir

    d = shared_data_dir(required=False)
    if d is None:
        pytest.skip("shared/data is not available (set QWEN3_QUANT_DATA)")
    return d


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private qwen3-quant cache (reference log-probabilities) for one test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("QWEN3_QUANT_CACHE", str(d))
    return d
