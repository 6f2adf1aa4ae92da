"""ONNX format: options, naming, the size estimator's arithmetic, and the graph edits, on toy inputs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from qwen3_quant.catalog import catalog
from qwen3_quant.errors import UsageError
from qwen3_quant.formats import get_format
from qwen3_quant.formats.base import check_contract
from qwen3_quant.formats.onnx import FORMAT, OnnxConfig, onnx_bytes
from qwen3_quant.formats.onnx.sizes import GRAPH_BYTES_BASE, GRAPH_BYTES_PER_LAYER


def test_registered_and_implemented():
    assert get_format("onnx") is FORMAT
    check_contract(FORMAT)  # every method of the format contract is there
    assert FORMAT.available()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, OnnxConfig("int4", 32, 4, "rtn")),
        (
            {"precision": "INT4", "block_size": 128, "quantizer": "k_quant"},
            OnnxConfig("int4", 128, 4, "k_quant"),
        ),
        ({"precision": "int4", "block_size": "64", "accuracy_level": 1}, OnnxConfig("int4", 64, 1, "rtn")),
        ({"precision": "int8"}, OnnxConfig("int8", 32, 4, "rtn")),
        ({"precision": "int8", "accuracy_level": 0}, OnnxConfig("int8", 32, 0, "rtn")),
        ({"precision": "fp32"}, OnnxConfig("fp32")),
        ({"precision": "fp16", "block_size": None}, OnnxConfig("fp16")),
    ],
)
def test_parse_options(given, expected):
    assert FORMAT.parse_options(given) == expected


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"precision": "int3"}, ["unknown ONNX precision 'int3'", "fp32, fp16, int8, int4"]),
        ({"precision": "fp16", "block_size": 64}, ["--block-size does not apply to --precision fp16"]),
        ({"precision": "int8", "block_size": 64}, ["--block-size does not apply to --precision int8"]),
        ({"precision": "fp32", "accuracy_level": 4}, ["--accuracy-level does not apply to --precision fp32"]),
        ({"precision": "int8", "quantizer": "k_quant"}, ["--quantizer does not apply to --precision int8"]),
        ({"block_size": 256}, ["--block-size 256 is not supported", "32, 64, 128"]),
        ({"block_size": 64.5}, ["--block-size 64.5 is not supported"]),
        ({"accuracy_level": 7}, ["--accuracy-level 7 is not supported"]),
        ({"quantizer": "gptq"}, ["unknown ONNX weight quantiser 'gptq'", "rtn, k_quant"]),
        ({"types": ["Q4_K_M"]}, ["--type does not apply to --format onnx"]),
        ({"bits": 4}, ["--bits does not apply to --format onnx"]),
        ({"group_size": 128}, ["--group-size does not apply to --format onnx"]),
        ({"imatrix": True}, ["--imatrix does not apply to --format onnx"]),
        ({"calib": "default"}, ["--calib does not apply to --format onnx"]),
        ({"max_shard_size": "45G"}, ["--max-shard-size does not apply to --format onnx"]),
        ({"starved_experts": "rtn"}, ["--starved-experts does not apply to --format onnx"]),
    ],
)
def test_bad_options_name_the_problem(given, words):
    with pytest.raises(UsageError) as err:
        FORMAT.parse_options(given)
    for w in words:
        assert w in err.value.one_line()


def test_names_and_bits():
    cfg = FORMAT.parse_options({"precision": "int4"})
    assert FORMAT.artifact_name("Qwen3-8B", cfg) == "Qwen3-8B-ONNX-int4"
    assert FORMAT.variants(cfg) == ["int4"]
    assert [FORMAT.nominal_bits(p) for p in ("fp32", "fp16", "int8", "int4")] == [32, 16, 8, 4]


def _toy(**changes):
    base = catalog()["Qwen3-8B"].arch
    return dataclasses.replace(
        base,
        num_hidden_layers=1,
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        intermediate_size=128,
        vocab_size=100,
        max_position_embeddings=16,
        tie_word_embeddings=False,
        **changes,
    )


def test_estimator_arithmetic_dense():
    a = _toy()
    graph = GRAPH_BYTES_BASE + GRAPH_BYTES_PER_LAYER
    rope = 2 * 16 * 16  # cos and sin, 16 rows of head_dim / 2
    norms = 64 + 32 + 32 + 64 + 64  # input, q, k, post-attention, final
    linear = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)]
    numel = sum(o * i for o, i in linear) + 2 * 100 * 64  # + embedding + lm_head
    assert onnx_bytes(a, "fp32") == graph + 4 * (rope + norms + numel)
    assert onnx_bytes(a, "fp16") == graph + 2 * (rope + norms + numel)

    def nbits(o, i, bits, block):
        return o * (i // block) * (block * bits // 8 + 4)

    for prec, bits, block in (("int4", 4, 32), ("int4", 4, 64), ("int8", 8, 32)):
        q = sum(nbits(o, i, bits, block) for o, i in [*linear, (100, 64), (100, 64)])  # + lm_head, embedding
        assert onnx_bytes(a, prec, block) == graph + 4 * (rope + norms) + q
    # tied: the embedding and the lm_head are one matrix (quantised for int4 / int8)
    t = dataclasses.replace(a, tie_word_embeddings=True)
    assert onnx_bytes(a, "fp32") - onnx_bytes(t, "fp32") == 100 * 64 * 4
    assert onnx_bytes(a, "int4") - onnx_bytes(t, "int4") == nbits(100, 64, 4, 32)
    assert onnx_bytes(a, "int8") - onnx_bytes(t, "int8") == nbits(100, 64, 8, 32)
    with pytest.raises(UsageError):
        onnx_bytes(a, "int2")


def test_estimator_arithmetic_moe():
    a = _toy(model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
    dense = _toy()
    router = 4 * 64
    expert_fp32 = 4 * (2 * 32 * 64 + 64 * 32) * 4 + 4 * (2 * 32 + 64) * 4  # weights + zero biases
    mlp_fp32 = 3 * 128 * 64 * 4
    assert onnx_bytes(a, "fp32") - onnx_bytes(dense, "fp32") == expert_fp32 + 4 * router - mlp_fp32
    # int4 experts: half a byte per weight plus an fp32 scale per 32
    e4 = 4 * (2 * 32 * 2 * (16 + 4) + 64 * 1 * (16 + 4)) + 4 * (2 * 32 + 64) * 4
    mlp4 = 2 * 128 * 2 * 20 + 64 * 4 * 20
    assert onnx_bytes(a, "int4") - onnx_bytes(dense, "int4") == e4 + 4 * router - mlp4


def test_estimate_uses_the_size_and_catalog_models_shrink():
    for entry in catalog().values():
        sizes = [FORMAT.estimate(entry.arch, p).artifact_bytes for p in ("fp32", "fp16", "int8", "int4")]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[3] < 0.4 * sizes[0]


def test_cli_rejects_before_loading_anything(tmp_path):
    from click.testing import CliRunner

    from qwen3_quant.cli import main

    r = CliRunner().invoke(
        main, ["quantize", "/no/such/model", "--format", "onnx", "--precision", "fp16", "--block-size", "64"]
    )
    assert r.exit_code == 2
    assert "--block-size does not apply to --precision fp16" in r.output
    r = CliRunner().invoke(main, ["quantize", "/no/such/model", "--format", "onnx", "--type", "Q4_K_M"])
    assert r.exit_code == 2 and "--type does not apply to --format onnx" in r.output


def test_package_import_is_light():
    code = (
        "import sys, qwen3_quant.cli\n"
        "from qwen3_quant.catalog import catalog\n"
        "from qwen3_quant.formats import get_format\n"
        "f = get_format('onnx')\n"
        "f.estimate(catalog()['Qwen3-30B-A3B'].arch, f.variants(f.parse_options({}))[0])\n"
        "assert f.available()\n"
        "heavy = ('torch', 'onnx', 'onnxruntime', 'onnxruntime_genai', 'transformers', 'numpy')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def _toy_int8(folder, tied=True):
    """input_ids -> Gather(embedding) -> MatMul(lm_head) as /lm_head/MatMul, quantised to int8
    MatMulNBits; the lm_head is the embedding transposed when ``tied``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(96, 64)).astype(np.float32)
    head = emb.T.copy() if tied else rng.normal(size=(64, 96)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Gather", ["model.embed_tokens.weight", "input_ids"], ["h"], name="/model/embed_tokens/Gather"
        ),
        helper.make_node("MatMul", ["h", "lm_head.MatMul.weight"], ["logits"], name="/lm_head/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", 96]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["b", "s", 64]),
        ],
        [
            numpy_helper.from_array(emb, "model.embed_tokens.weight"),
            numpy_helper.from_array(head, "lm_head.MatMul.weight"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    q = MatMulNBitsQuantizer(model, bits=8, block_size=32, is_symmetric=True, accuracy_level=1)
    q.process()
    folder.mkdir()
    onnx.save_model(
        q.model.model,
        folder / "model.onnx",
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    return emb


def _run(folder, ids, output="logits"):
    import onnxruntime as ort

    s = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return s.run([output], {"input_ids": ids})[0]


IDS = np.array([[0, 5, 95, 17]], dtype=np.int64)


def test_share_int8_embedding_drops_the_fp32_copy(tmp_path):
    from qwen3_quant.formats.onnx import graph

    folder = tmp_path / "toy"
    emb = _toy_int8(folder)
    before, size_before = _run(folder, IDS), (folder / "model.onnx.data").stat().st_size
    assert graph.share_int8_embedding(folder)
    after, size_after = _run(folder, IDS), (folder / "model.onnx.data").stat().st_size
    assert size_before - size_after == emb.nbytes
    assert not graph.has_initializer(folder, graph.EMBED_WEIGHT)
    assert graph.summarise(folder)["GatherBlockQuantized_bits"] == [8]
    # the embedding now reads int8 weights: close to the fp32 result, not identical
    assert 0 < np.abs(after - before).max() < 0.05 * np.abs(before).max()
    assert not graph.share_int8_embedding(folder)  # nothing left to share


@pytest.mark.parametrize(("bits", "block"), [(8, 32), (4, 32), (4, 64)])
def test_quantize_embedding_streams_it_to_blocks(tmp_path, bits, block):
    from qwen3_quant.formats.onnx import graph

    folder = tmp_path / "toy"
    emb = _toy_int8(folder, tied=False)
    before, size_before = _run(folder, IDS), (folder / "model.onnx.data").stat().st_size
    assert graph.quantize_embedding(folder, bits, block, rows_per_chunk=40)  # 96 rows: three chunks
    after, size_after = _run(folder, IDS), (folder / "model.onnx.data").stat().st_size
    assert size_before - size_after == emb.nbytes - 96 * 64 * bits // 8 - 96 * 64 // block * 4
    assert graph.summarise(folder)["GatherBlockQuantized_bits"] == [bits]
    # GatherBlockQuantized reads exactly what quantize_rows wrote: compare with our own dequantisation
    q, scale = graph.quantize_rows(emb, bits, block)
    if bits == 4:
        q = np.stack([q & 15, q >> 4], axis=-1).reshape(96, 64)
    deq = ((q.astype(np.float32) - 2 ** (bits - 1)).reshape(96, -1, block) * scale[..., None]).reshape(96, 64)
    assert np.allclose(_run(folder, IDS, "h")[0], deq[IDS[0]], atol=1e-6)
    assert 0 < np.abs(after - before).max() < (0.05 if bits == 8 else 0.5) * np.abs(before).max()
    assert not graph.quantize_embedding(folder, bits, block)


def test_rows_round_trip():
    from qwen3_quant.formats.onnx.graph import quantize_rows

    w = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)
    w[1] = 0.0
    for bits in (8, 4):
        q, scale = quantize_rows(w, bits, 32)
        assert q.dtype == np.uint8 and q.shape == (3, 64 * bits // 8) and scale.shape == (3, 2)
        if bits == 4:
            q = np.stack([q & 15, q >> 4], axis=-1).reshape(3, 64)
        back = (q.reshape(3, 2, 32).astype(np.float32) - 2 ** (bits - 1)) * scale[..., None]
        assert np.abs(back.reshape(3, 64) - w).max() <= np.abs(scale).max() / 2 + 1e-6
        assert q.min() == 0  # the largest magnitude of a block sits on the lowest level
        assert (back.reshape(3, 64)[1] == 0).all()
