"""The streaming safetensors -> GGUF writer: metadata llama.cpp reads, tensor layout, expert
stacking from both layouts, splits, bounded memory, and errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from qwen3_quant.checkpoint import inspect_checkpoint  # noqa: E402
from qwen3_quant.errors import CheckpointError  # noqa: E402
from qwen3_quant.formats.gguf.gguf_io import TensorInfo, read_header, read_tensor_data, resplit, split_set  # noqa: E402
from qwen3_quant.formats.gguf.metadata import describe  # noqa: E402
from qwen3_quant.formats.gguf.tensors import convert_chunk  # noqa: E402
from qwen3_quant.formats.gguf.tokenizer import CONTROL, NORMAL, UNUSED, USER_DEFINED  # noqa: E402
from qwen3_quant.formats.gguf.writer import convert  # noqa: E402
from qwen3_quant.sources import resolve_model  # noqa: E402


def _convert(model_dir: Path, dest: Path, out_type: str = "BF16", **kw) -> list[Path]:
    src = resolve_model(str(model_dir))
    info = inspect_checkpoint(src.path)
    return convert(info, describe(src, info), dest, out_type=out_type, **kw)


def _fields(path: Path) -> dict:
    return read_header(path, arrays=True).kv


def _tensors(*paths: Path) -> dict[str, TensorInfo]:
    return {t.name: t for p in paths for t in read_header(p).tensors}


@pytest.fixture(scope="module")
def micro_bf16(micro_dense, tmp_path_factory) -> Path:
    return _convert(micro_dense, tmp_path_factory.mktemp("w") / "micro-BF16.gguf")[0]


@pytest.fixture(scope="module")
def moe_bf16(micro_moe, tmp_path_factory) -> Path:
    return _convert(micro_moe, tmp_path_factory.mktemp("w") / "moe-BF16.gguf")[0]


# --- pure conversions --------------------------------------------------------------------------


def test_float_conversions_match_gguf_py():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(4096).astype(np.float32) * 100, [np.nan, np.inf, -0.0, 1e-40]])
    x = x.astype(np.float32)
    raw = x.view(np.uint8)
    bf16 = convert_chunk(raw, "F32", "BF16").view(np.uint16)
    want = gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16).view(np.uint16)
    assert np.array_equal(bf16, want)
    back = convert_chunk(bf16.view(np.uint8), "BF16", "F32").view(np.float32)
    finite = np.isfinite(x)
    assert np.allclose(back[finite], x[finite], rtol=2**-8)
    assert np.array_equal(
        convert_chunk(raw, "F32", "F16").view(np.float16), x.astype(np.float16), equal_nan=True
    )
    assert convert_chunk(bf16.view(np.uint8), "BF16", "BF16") is not None


# --- metadata ----------------------------------------------------------------------------------


def test_dense_metadata_and_tokenizer(micro_bf16, micro_dense):
    f = _fields(micro_bf16)
    cfg = json.loads((micro_dense / "config.json").read_text())
    assert f["general.architecture"] == "qwen3"
    assert f["general.name"] == "Qwen3 Micro" and f["general.basename"] == "Qwen3"
    assert f["general.quantized_by"] == "qwen3-quant" and f["general.size_label"]
    assert f["general.file_type"] == 32  # MOSTLY_BF16
    assert f["qwen3.block_count"] == cfg["num_hidden_layers"]
    assert f["qwen3.context_length"] == cfg["max_position_embeddings"]
    assert f["qwen3.embedding_length"] == cfg["hidden_size"]
    assert f["qwen3.feed_forward_length"] == cfg["intermediate_size"]
    assert f["qwen3.attention.head_count"] == cfg["num_attention_heads"]
    assert f["qwen3.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert f["qwen3.attention.key_length"] == f["qwen3.attention.value_length"] == cfg["head_dim"]
    assert f["qwen3.rope.freq_base"] == pytest.approx(1e6)
    assert f["qwen3.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])

    tj = json.loads((micro_dense / "tokenizer.json").read_text())
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    n_real = len(tj["model"]["vocab"]) + len(tj["added_tokens"])
    assert len(tokens) == len(types) == cfg["vocab_size"] > n_real  # padded up to the embedding rows
    assert tokens[n_real] == f"[PAD{n_real}]" and set(types[n_real:]) == {UNUSED}
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "qwen2"
    by_text = dict(zip(tokens, types, strict=True))
    assert by_text["<|im_start|>"] == by_text["<|endoftext|>"] == CONTROL  # special
    assert by_text["<|fim_prefix|>"] == CONTROL  # not special in HF, but shaped like a control token
    assert by_text["<think>"] == by_text["<tool_call>"] == USER_DEFINED  # plain added tokens
    assert by_text["the"] == NORMAL if "the" in by_text else True
    assert len(f["tokenizer.ggml.merges"]) == len(tj["model"]["merges"])
    gen = json.loads((micro_dense / "generation_config.json").read_text())
    assert f["tokenizer.ggml.bos_token_id"] == gen["bos_token_id"]
    assert f["tokenizer.ggml.eos_token_id"] == gen["eos_token_id"][0]
    assert f["tokenizer.ggml.padding_token_id"] == gen["pad_token_id"]
    assert f["tokenizer.ggml.add_bos_token"] is False
    template = json.loads((micro_dense / "tokenizer_config.json").read_text())["chat_template"]
    assert f["tokenizer.chat_template"] == template and "enable_thinking" in template
    assert f["general.sampling.top_k"] == gen["top_k"]


def test_dense_tensors_tied(micro_bf16, micro_dense):
    t = _tensors(micro_bf16)
    assert "output.weight" not in t  # tied: llama.cpp reuses token_embd
    assert t["token_embd.weight"].ggml_type == "BF16"
    assert t["blk.0.attn_norm.weight"].ggml_type == "F32"
    assert t["blk.0.attn_q_norm.weight"].ggml_type == "F32"
    assert t["output_norm.weight"].ggml_type == "F32"
    # the bytes are the checkpoint's bf16 bytes, untouched
    from safetensors import safe_open

    with safe_open(micro_dense / "model.safetensors", "pt") as st:
        w = st.get_tensor("model.layers.1.mlp.down_proj.weight")
    got = np.frombuffer(read_tensor_data(micro_bf16)["blk.1.ffn_down.weight"], np.uint16).reshape(w.shape)
    assert np.array_equal(got, w.view(dtype=__import__("torch").int16).numpy().view(np.uint16))


def test_moe_tensors_and_metadata(moe_bf16, micro_moe):
    f = _fields(moe_bf16)
    cfg = json.loads((micro_moe / "config.json").read_text())
    n_exp = cfg["num_local_experts"] if "num_local_experts" in cfg else cfg["num_experts"]
    assert f["general.architecture"] == "qwen3moe"
    assert f["qwen3moe.expert_count"] == n_exp
    assert f["qwen3moe.expert_used_count"] == cfg["num_experts_per_tok"]
    assert f["qwen3moe.expert_feed_forward_length"] == cfg["moe_intermediate_size"]
    t = _tensors(moe_bf16)
    h, m = cfg["hidden_size"], cfg["moe_intermediate_size"]
    assert t["blk.0.ffn_gate_exps.weight"].shape == (n_exp, m, h)
    assert t["blk.0.ffn_up_exps.weight"].shape == (n_exp, m, h)
    assert t["blk.0.ffn_down_exps.weight"].shape == (n_exp, h, m)
    assert t["blk.0.ffn_gate_inp.weight"].ggml_type == "F32"  # the router stays F32
    assert "output.weight" in t  # not tied


def _fuse_experts(src: Path, dst: Path) -> Path:
    """The same MoE checkpoint in transformers' fused layout (gate_up_proj / down_proj per layer)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(src / "model.safetensors")
    out, layers = {}, {}
    for k, v in sd.items():
        if ".mlp.experts." in k:
            pre, rest = k.split(".mlp.experts.")
            e, proj, _ = rest.split(".")
            layers.setdefault(pre, {}).setdefault(proj, {})[int(e)] = v
        else:
            out[k] = v
    for pre, projs in layers.items():
        n = len(projs["gate_proj"])
        gate_up = [torch.cat([projs["gate_proj"][e], projs["up_proj"][e]]) for e in range(n)]
        out[f"{pre}.mlp.experts.gate_up_proj"] = torch.stack(gate_up).contiguous()
        out[f"{pre}.mlp.experts.down_proj"] = torch.stack(
            [projs["down_proj"][e] for e in range(n)]
        ).contiguous()
    (dst / "model.safetensors").unlink()
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_fused_expert_layout_gives_the_same_file(moe_bf16, micro_moe, tmp_path):
    fused = _fuse_experts(micro_moe, tmp_path / "Qwen3-Micro-MoE")
    assert inspect_checkpoint(fused).expert_layout == "fused"
    out = _convert(fused, tmp_path / "fused-BF16.gguf")[0]
    assert read_tensor_data(moe_bf16) == read_tensor_data(out)


def test_yarn_rope_scaling(micro_dense, tmp_path):
    d = shutil.copytree(micro_dense, tmp_path / "yarn")
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_parameters"] = {
        "rope_type": "yarn",
        "rope_theta": 1e6,
        "factor": 4.0,
        "original_max_position_embeddings": 512,
    }
    cfg["max_position_embeddings"] = 2048
    (d / "config.json").write_text(json.dumps(cfg))
    f = _fields(_convert(d, tmp_path / "yarn.gguf")[0])
    assert f["qwen3.rope.scaling.type"] == "yarn"
    assert f["qwen3.rope.scaling.factor"] == pytest.approx(4.0)
    assert f["qwen3.rope.scaling.original_context_length"] == 512
    assert f["qwen3.context_length"] == 2048
    assert "qwen3.rope.scaling.type" not in _fields(_convert(micro_dense, tmp_path / "plain.gguf")[0])


# --- splits ------------------------------------------------------------------------------------


def test_splits_and_resplit(micro_bf16, micro_dense, tmp_path):
    files = _convert(micro_dense, tmp_path / "s" / "m.gguf", max_shard_size=3_000_000)
    assert len(files) >= 3
    assert [f.name for f in files] == [
        f"m-{i:05d}-of-{len(files):05d}.gguf" for i in range(1, len(files) + 1)
    ]
    assert split_set(files[0]) == files
    first = _fields(files[0])
    assert first["split.count"] == len(files) and first["split.no"] == 0
    assert first["split.tensors.count"] == len(_tensors(micro_bf16))
    assert "tokenizer.ggml.tokens" in first and "tokenizer.ggml.tokens" not in _fields(files[1])
    whole = read_tensor_data(micro_bf16)
    assert read_tensor_data(*files) == whole
    again = resplit(micro_bf16, tmp_path / "r" / "m.gguf", 4_000_000)
    assert len(again) >= 2 and read_tensor_data(*again) == whole
    kv0 = _fields(again[0])
    assert kv0["split.count"] == len(again) and _fields(again[-1])["split.no"] == len(again) - 1
    assert {k: v for k, v in kv0.items() if not k.startswith("split.")} == _fields(micro_bf16)


# --- memory ------------------------------------------------------------------------------------

_PEAK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from qwen3_quant.checkpoint import inspect_checkpoint
    from qwen3_quant.formats.gguf.metadata import describe
    from qwen3_quant.formats.gguf.writer import convert
    from qwen3_quant.sources import resolve_model
    src = resolve_model(sys.argv[1]); info = inspect_checkpoint(src.path)
    convert(info, describe(src, info), Path(sys.argv[2]), out_type=sys.argv[3])
    # VmHWM starts afresh at exec; ru_maxrss would carry over the forking parent's peak
    status = Path("/proc/self/status").read_text()
    print(int(status.split("VmHWM:")[1].split()[0]) * 1024)
    """
)


def _peak_rss(model: Path, dest: Path, out_type: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(model), str(dest), out_type],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_peak_memory_does_not_grow_with_depth(micro_dense, tmp_path):
    """A model 12x deeper (same width, 70 MB more weights, 140 MB more output) converts in the same memory."""
    from qwen3_quant.catalog.architecture import ArchShape
    from qwen3_quant.testing.tiny import build_model

    arch = ArchShape.from_config(json.loads((micro_dense / "config.json").read_text()))
    deep_arch = __import__("dataclasses").replace(arch, num_hidden_layers=48)
    deep = build_model(deep_arch, tmp_path / "deep")
    shallow_w = (micro_dense / "model.safetensors").stat().st_size
    deep_w = (deep / "model.safetensors").stat().st_size
    assert deep_w - shallow_w > 60e6
    # F32 output: every tensor is converted, the worst case for memory
    small = _peak_rss(micro_dense, tmp_path / "a.gguf", "F32")
    big = _peak_rss(deep, tmp_path / "b.gguf", "F32")
    assert (tmp_path / "b.gguf").stat().st_size > 2 * deep_w - 1e6
    print(f"peak RSS: micro {small / 1e6:.0f} MB, 12x deeper {big / 1e6:.0f} MB")
    assert big - small < 0.1 * (deep_w - shallow_w), (small, big)


# --- errors ------------------------------------------------------------------------------------


def test_refuses_what_llama_cpp_cannot_run(micro_moe, tmp_path):
    d = shutil.copytree(micro_moe, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["norm_topk_prob"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="norm_topk_prob"):
        _convert(d, tmp_path / "x.gguf")


def test_tokenizer_that_is_not_byte_level_bpe(micro_dense, tmp_path):
    d = shutil.copytree(micro_dense, tmp_path / "m")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["model"]["type"] = "Unigram"
    (d / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(CheckpointError, match="not BPE"):
        _convert(d, tmp_path / "x.gguf")
