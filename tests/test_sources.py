import pytest

from qwen3_quant.errors import DownloadError, MissingFileError, UnknownModelError
from qwen3_quant.sources import resolve_model


def test_local_folder(tiny_model):
    src = resolve_model(str(tiny_model("Qwen3-0.6B")))
    assert src.path.is_dir() and src.hub_id is None and src.name.startswith("Qwen3-0.6B")


def test_bundled_micro_models(micro_dense, micro_moe):
    assert resolve_model("Qwen3-Micro").path == micro_dense
    assert resolve_model("qwen3-micro-moe").path == micro_moe


def test_catalog_name_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="Qwen/Qwen3-8B is not in the local Hugging Face cache") as e:
        resolve_model("Qwen3-8B", cache_dir=tmp_path)
    assert "HF_HUB_OFFLINE" in e.value.one_line()


def test_hub_id_with_revision_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="someorg/my-qwen3"):
        resolve_model("someorg/my-qwen3@v1", cache_dir=tmp_path)


def test_unknown_and_missing(tmp_path):
    with pytest.raises(UnknownModelError, match="unknown model 'Qwen3-9B'"):
        resolve_model("Qwen3-9B")
    with pytest.raises(MissingFileError, match="model folder not found"):
        resolve_model(str(tmp_path / "absent"))


def test_base_without_release():
    with pytest.raises(UnknownModelError, match="no -Base checkpoint"):
        resolve_model("Qwen3-32B-Base")
