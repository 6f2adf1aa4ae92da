"""The builder's Qwen3 graphs made a decoder layer at a time, in bounded host memory.

onnxruntime-genai's builder loads the whole checkpoint with transformers, keeps every initialiser
in its in-memory graph until it saves, and (int4/int8) runs ``MatMulNBitsQuantizer`` over a protobuf
copy of the finished fp32 graph: about 8 bytes a weight at the peak. This subclass keeps the
builder's graph code and changes only where the weights come from and where they go:

- the decoder layers are transformers modules on the meta device, each given its weights from the
  safetensors shards (:class:`~qwen3_quant.layerwise.CheckpointTensors`) just before the builder
  makes it and dropped right after;
- an int4/int8 ``MatMul`` is quantised when the builder makes it, by the same
  ``MatMulNBitsQuantizer`` with the same settings, run on a graph of that one node, so the weights
  and node names are those of the builder's whole-graph pass;
- after each layer every initialiser still in memory is appended to ``model.onnx.data`` and
  replaced by a reference to it, so the graph held until the save is only nodes.

Peak host memory is then about one layer's weights (in the checkpoint's dtype and once in fp32)
plus the embedding matrix, not the model. Imported only when converting: it loads torch and the
builder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime_genai.models  # noqa: F401  (puts the builder's modules on sys.path)
import torch
from builders.base import Model as BuilderModel
from builders.qwen import Qwen3Model
from onnx import helper
from onnx_ir.tensor_adapters import to_torch_dtype
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from onnxruntime.quantization.quant_utils import QuantFormat

from ...layerwise import CheckpointTensors, release_freed_memory
from .moe import GENAI_MODEL_TYPE, Qwen3MoeBuilderModel, build_with
from .sizes import QUANTISER_CHUNK_BYTES

DATA_FILE = "model.onnx.data"
_INT_TYPES = {ir.DataType.INT4, ir.DataType.UINT4, ir.DataType.INT8, ir.DataType.UINT8}


class _DataFile:
    """``model.onnx.data`` written as the graph is made: each initialiser once, appended."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.fh = open(self.folder / DATA_FILE, "wb")  # noqa: SIM115  (closed by close())
        self.offset = 0

    def spill(self, graph: ir.Graph) -> None:
        """Every initialiser of ``graph`` still in memory goes to the file; the graph keeps a reference."""
        for value in graph.initializers.values():
            t = value.const_value
            if t is None or isinstance(t, ir.ExternalTensor):
                continue
            start = self.offset
            data = t.tobytes()
            self.fh.write(data)
            self.offset += len(data)
            del data
            value.const_value = self._reference(value.name, t.dtype, list(t.shape), start)
            del t
        self.fh.flush()

    def write_rows(self, name: str, dtype: ir.DataType, shape: list[int], blocks) -> ir.ExternalTensor:
        """A tensor written from ``blocks`` (contiguous numpy arrays of consecutive rows), never whole."""
        start = self.offset
        for block in blocks:
            self.fh.write(memoryview(block.reshape(-1).view(np.uint8)))
            self.offset += block.nbytes
            del block
        self.fh.flush()
        return self._reference(name, dtype, shape, start)

    def _reference(self, name: str, dtype: ir.DataType, shape: list[int], start: int) -> ir.ExternalTensor:
        return ir.ExternalTensor(
            DATA_FILE,
            start,
            self.offset - start,
            dtype,
            shape=ir.Shape(shape),
            name=name,
            base_dir=str(self.folder),
        )

    def close(self) -> None:
        self.fh.close()


class StreamingBuilderMixin:
    """Overrides the builder's weight loading, int4/int8 pass and save (see the module doc)."""

    checkpoint: CheckpointTensors
    out_dir: Path
    chunk_bytes = QUANTISER_CHUNK_BYTES  # fp32 bytes of a weight converted or quantised at a time

    # -- weights: one layer at a time -------------------------------------------------------------
    def make_model(self, input_path):
        from transformers import AutoConfig, AutoModelForCausalLM

        self.make_inputs_and_outputs()
        config = AutoConfig.from_pretrained(input_path)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        dtype = _stored_dtype(self.checkpoint.info.dtypes)
        tensors = self.checkpoint
        self.weights = None  # the builder reads ``self.weights.lm_head`` for pre-quantised heads only
        self.data_file = _DataFile(self.out_dir)
        try:
            self.make_preprocessing_nodes()
            if self.exclude_embeds:
                self.layernorm_attrs["root_input"] = "inputs_embeds"
                self.layernorm_attrs["skip_input"] = "inputs_embeds"
            else:
                print("Reading embedding layer")
                self.make_embedding(
                    torch.nn.Parameter(tensors.get("model.embed_tokens.weight").to(dtype), False)
                )
                self._layer_done()
            body = skeleton.model
            for li in range(self.num_layers):
                layer = body.layers[li]
                layer.load_state_dict(tensors.layer_state(layer, li, dtype), strict=True, assign=True)
                print(f"Reading layer {li}")
                self.layer_id = li
                self.make_layer(li, layer)
                self.data_file.spill(self.model.graph)  # before the weights go: initialisers may be views
                body.layers[li] = layer.to("meta")
                del layer
                release_freed_memory()
            self.layer_id = self.num_layers
            print("Reading final norm")
            body.norm.load_state_dict({"weight": tensors.get("model.norm.weight").to(dtype)}, assign=True)
            self.make_layernorm(
                self.layer_id,
                body.norm,
                skip=True,
                simple=self.layernorm_attrs["simple"],
                location="final_norm",
            )
            if not self.exclude_lm_head:
                print("Reading LM head")
                head = "lm_head.weight" if "lm_head.weight" in tensors.where else "model.embed_tokens.weight"
                skeleton.lm_head.load_state_dict({"weight": tensors.get(head).to(dtype)}, assign=True)
                self.make_lm_head(skeleton.lm_head)
                self.data_file.spill(self.model.graph)
                skeleton.lm_head.to("meta")
            self.make_aux_hidden_states()
            self.make_postprocessing_nodes()
            self._layer_done()
        except BaseException:
            self.data_file.close()
            raise
        del self.weights

    def _layer_done(self) -> None:
        self.data_file.spill(self.model.graph)
        release_freed_memory()

    # -- int4/int8: each MatMul as it is made ------------------------------------------------------
    def _quantises(self, name: str, op_type: str) -> bool:
        return (
            self.onnx_dtype in _INT_TYPES
            and not (self.quant_type is not None and self.quant_attrs["use_qdq"])
            and op_type in self.quant_attrs["op_types_to_quantize"]
            and name not in self.quant_attrs["nodes_to_exclude"]
        )

    # -- fp32/fp16: a large matrix written to the data file a block of rows at a time ------------
    def _write_float_rows(self, name: str, rows, *, transpose: bool) -> None:
        """The initialiser ``name``: ``rows`` (transposed for a MatMul) in the io dtype, written in blocks."""
        dtype = to_torch_dtype(self.io_dtype)
        n, width = rows.shape
        shape = [width, n] if transpose else [n, width]
        step = max(1, self.chunk_bytes // (4 * shape[1]))

        def blocks():
            for start in range(0, shape[0], step):
                part = rows[:, start : start + step].T if transpose else rows[start : start + step]
                yield part.detach().to(dtype).contiguous().numpy()

        value = self.make_value(name, self.io_dtype, shape)
        value.const_value = self.data_file.write_rows(name, self.io_dtype, shape, blocks())
        self.model.graph.register_initializer(value)

    def _large(self, rows) -> bool:
        return rows.numel() * 4 > self.chunk_bytes

    def make_matmul_float(self, matmul, name, root_input, **kwargs):
        quantised = self._quantises(name, "MatMul")
        if not quantised and not self._large(matmul.weight):
            return super().make_matmul_float(matmul, name, root_input, **kwargs)
        # the builder's make_matmul_float, with the weight quantised or written in blocks, never held
        weight_name = name[1:].replace("/", ".") + ".weight"
        out_f, in_f = matmul.weight.shape
        output = "logits" if kwargs.get("logits", False) else f"{name}/output_0"
        if quantised:
            elem = int(self.io_dtype)  # ir.DataType numbers are ONNX's
            self._emit_quantised(
                helper.make_node("MatMul", [root_input, weight_name], [output], name=name),
                weight_name,
                matmul.weight,
                transpose=True,  # the builder's initialiser is the transposed weight (B of the MatMul)
                value_info=lambda n: (
                    [helper.make_tensor_value_info(root_input, elem, ["n", in_f])],
                    [helper.make_tensor_value_info(output, elem, ["n", n])],
                ),
            )
        else:
            self._write_float_rows(weight_name, matmul.weight, transpose=True)
            self.make_node("MatMul", inputs=[root_input, weight_name], outputs=[output], name=name)
        seq_dim = kwargs.get("seq_dim", "sequence_length")
        self.make_value(
            output, self.io_dtype, shape=self.make_hidden_state_shape(seq_dim=seq_dim, last_dim=out_f)
        )
        return name

    def _emit_quantised(self, node, weight_name: str, rows, *, transpose: bool, value_info) -> None:
        """Quantise ``node``, whose weight initialiser ``weight_name`` is ``rows`` (transposed for a
        MatMul), in graphs of that node alone, a block of rows (output features) at a time, and add
        the concatenated result to the graph. The quantisers treat each row separately (blocks run
        along the input features), so this is their output on the whole matrix."""
        dtype = to_torch_dtype(self.io_dtype)
        n_rows, width = rows.shape
        step = max(256, self.chunk_bytes // (4 * width) // 256 * 256)
        parts: dict[str, list[np.ndarray]] = {}
        nodes = None
        for start in range(0, n_rows, step):
            part = rows[start : start + step].detach()
            w = torch.empty((width, len(part)) if transpose else tuple(part.shape), dtype=dtype)
            w.copy_(part.T if transpose else part)
            inputs, outputs = value_info(len(part))
            graph = helper.make_graph(
                [node], "one_node", inputs, outputs, [onnx.numpy_helper.from_array(w.numpy(), weight_name)]
            )
            del w
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
            del graph
            quantised = self._quantise_proto(model, node.name)
            del model
            for init in quantised.graph.initializer:
                parts.setdefault(init.name, []).append(onnx.numpy_helper.to_array(init))
            if nodes is None:  # copies: a node would keep the whole quantised model alive
                nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in quantised.graph.node]
            del quantised
            release_freed_memory()
        for name, arrays in parts.items():  # written block by block: never joined in memory
            dtype = ir.DataType.from_numpy(arrays[0].dtype)
            shape = [sum(len(a) for a in arrays), *arrays[0].shape[1:]]
            value = self.make_value(name, dtype, shape)
            blocks = (arrays.pop(0) for _ in range(len(arrays)))
            value.const_value = self.data_file.write_rows(name, dtype, shape, blocks)
            self.model.graph.register_initializer(value)
        for n in nodes:
            attrs = {a.name: _attribute(a) for a in n.attribute}
            if n.op_type == "MatMulNBits":
                attrs["N"] = n_rows
            self.make_node(n.op_type, list(n.input), list(n.output), name=n.name, domain=n.domain, **attrs)

    def _quantise_proto(self, model: onnx.ModelProto, name: str) -> onnx.ModelProto:
        """What the builder's ``to_nbits`` does to node ``name``, on a graph of that node alone."""
        if getattr(self, "int4_customized_weight_config", None) or getattr(
            self, "exact_quant_overrides", None
        ):
            raise NotImplementedError(
                "per-node int4/int8 overrides are not supported by the streaming exporter"
            )
        method = getattr(self, "quantization_algo", "default")
        algo = None
        if method != "default":
            algo = self.make_algo_config(method, {name: {"bits": self.quant_attrs["bits"]}})
        q = MatMulNBitsQuantizer(
            model=model,
            bits=self.quant_attrs["bits"],
            block_size=self.quant_attrs["matmul_block_size"],
            is_symmetric=self.quant_attrs["is_symmetric"],
            accuracy_level=self.quant_attrs["accuracy_level"],
            nodes_to_exclude=list(self.quant_attrs["nodes_to_exclude"]),
            quant_format=QuantFormat.QDQ if self.quant_attrs["use_qdq"] else QuantFormat.QOperator,
            op_types_to_quantize=self.quant_attrs["op_types_to_quantize"],
            algo_config=algo,
        )
        q.process()
        return q.model.model

    def make_embedding_lookup(self, embedding, basename, lm_head):
        tied = (self.tied_quantized_embeddings or self.tied_unquantized_embeddings) and getattr(
            lm_head, "can_reuse_as_embedding", True
        )
        name = f"{basename}/Gather"
        if not tied and not self._quantises(name, "Gather") and self._large(embedding):
            # the builder's untied float lookup, with the matrix written in blocks
            self._write_float_rows("model.embed_tokens.weight", embedding, transpose=False)
            output = f"{name}/output_0"
            self.make_node(
                "Gather",
                inputs=["model.embed_tokens.weight", self.input_names["input_ids"]],
                outputs=[output],
                name=name,
            )
            return output
        if tied or not self._quantises(name, "Gather"):
            return super().make_embedding_lookup(embedding, basename, lm_head)
        # an untied int4 embedding: the builder's whole-graph pass makes it a GatherBlockQuantized
        weight_name, ids, output = (
            "model.embed_tokens.weight",
            self.input_names["input_ids"],
            f"{name}/output_0",
        )
        elem = int(self.io_dtype)  # ir.DataType numbers are ONNX's
        hidden = embedding.shape[1]
        self._emit_quantised(
            helper.make_node("Gather", [weight_name, ids], [output], name=name),
            weight_name,
            embedding,
            transpose=False,
            value_info=lambda n: (
                [helper.make_tensor_value_info(ids, onnx.TensorProto.INT64, ["b", "s"])],
                [helper.make_tensor_value_info(output, elem, ["b", "s", hidden])],
            ),
        )
        return output

    # -- save: the graph only; its weights are already in model.onnx.data ---------------------------
    def save_model(self, out_dir):
        print(f"Saving ONNX model in {out_dir}")
        self.data_file.close()
        model = self.model
        model.graph.sort()
        BuilderModel.stamp_build_metadata(model)
        out_path = os.path.join(out_dir, self.filename)
        ir.save(model, out_path)  # initialisers already external keep their location
        if os.path.isdir(self.cache_dir) and not os.listdir(self.cache_dir):
            os.rmdir(self.cache_dir)


def _attribute(a: onnx.AttributeProto):
    v = helper.get_attribute_value(a)
    return v.decode() if isinstance(v, bytes) else v


def _stored_dtype(dtypes: set[str]) -> torch.dtype:
    """The dtype the layers are read in: the checkpoint's own when it has one float type, else fp32
    (the builder casts every weight to the graph's dtype, so no value changes on the way)."""
    known = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    return known[next(iter(dtypes))] if len(dtypes) == 1 and next(iter(dtypes)) in known else torch.float32


class StreamingQwen3(StreamingBuilderMixin, Qwen3Model):
    pass


class StreamingQwen3Moe(StreamingBuilderMixin, Qwen3MoeBuilderModel):
    pass


def create_streaming(
    kind: str,
    checkpoint: CheckpointTensors,
    out: Path,
    precision: str,
    ep: str,
    cache_dir: Path,
    options: dict,
) -> None:
    """What the builder's ``create_model`` does for Qwen3 (and the project's MoE), a layer at a time."""

    def prepare(model) -> None:
        model.checkpoint, model.out_dir = checkpoint, Path(out)

    moe = kind == "moe"
    build_with(
        StreamingQwen3Moe if moe else StreamingQwen3,
        checkpoint.info.path,
        out,
        precision,
        ep,
        cache_dir,
        options,
        genai_type=GENAI_MODEL_TYPE if moe else None,
        prepare=prepare,
    )
