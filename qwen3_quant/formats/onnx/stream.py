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

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime_genai.models  # noqa: F401  (puts the builder's modules on sys.path)
import onnxruntime_genai.models.builder as gb
import torch
from builders.base import Model as BuilderModel
from builders.qwen import Qwen3Model
from onnx import helper
from onnx_ir.tensor_adapters import to_torch_dtype
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from onnxruntime.quantization.quant_utils import QuantFormat

from ...layerwise import CheckpointTensors, release_freed_memory
from .moe import GENAI_MODEL_TYPE, Qwen3MoeBuilderModel

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
            data = t.tobytes()
            self.fh.write(data)
            value.const_value = ir.ExternalTensor(
                DATA_FILE,
                self.offset,
                len(data),
                t.dtype,
                shape=ir.Shape(list(t.shape)),
                name=value.name,
                base_dir=str(self.folder),
            )
            self.offset += len(data)
            del data, t
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class StreamingBuilderMixin:
    """Overrides the builder's weight loading, int4/int8 pass and save (see the module doc)."""

    checkpoint: CheckpointTensors
    out_dir: Path

    # -- weights: one layer at a time -------------------------------------------------------------
    def make_model(self, input_path):
        from transformers import AutoConfig, AutoModelForCausalLM

        self.make_inputs_and_outputs()
        config = AutoConfig.from_pretrained(input_path)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        dtype = _checkpoint_dtype(config)
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
                body.layers[li] = layer.to("meta")
                del layer
                self._layer_done()
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

    def make_matmul_float(self, matmul, name, root_input, **kwargs):
        if not self._quantises(name, "MatMul"):
            return super().make_matmul_float(matmul, name, root_input, **kwargs)
        weight_name = name[1:].replace("/", ".") + ".weight"
        # what the builder's initialiser holds: the transposed weight cast to the graph's io dtype
        weight = matmul.weight.T.to(to_torch_dtype(self.io_dtype)).detach().contiguous().numpy()
        out_f = matmul.weight.shape[0]
        output = "logits" if kwargs.get("logits", False) else f"{name}/output_0"
        self._emit_quantised_matmul(name, root_input, weight_name, weight, output)
        seq_dim = kwargs.get("seq_dim", "sequence_length")
        self.make_value(
            output, self.io_dtype, shape=self.make_hidden_state_shape(seq_dim=seq_dim, last_dim=out_f)
        )
        return name

    def _emit_quantised_matmul(self, name, root_input, weight_name, weight: np.ndarray, output: str) -> None:
        elem = helper.np_dtype_to_tensor_dtype(weight.dtype)
        self._emit_quantised(
            helper.make_node("MatMul", [root_input, weight_name], [output], name=name),
            [helper.make_tensor_value_info(root_input, elem, ["n", weight.shape[0]])],
            [helper.make_tensor_value_info(output, elem, ["n", weight.shape[1]])],
            weight_name,
            weight,
        )

    def _emit_quantised(self, node, inputs, outputs, weight_name: str, weight: np.ndarray) -> None:
        """Quantise ``node`` (weight initialiser ``weight``) in a graph of its own; add what comes out."""
        g = helper.make_graph(
            [node], "one_node", inputs, outputs, [onnx.numpy_helper.from_array(weight, weight_name)]
        )
        del weight
        quantised = self._quantise_proto(
            helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]), node.name
        )
        for init in quantised.graph.initializer:
            self.make_initializer(onnx.numpy_helper.to_array(init), init.name)
        for n in quantised.graph.node:
            attrs = {a.name: _attribute(a) for a in n.attribute}
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
        if tied or not self._quantises(name, "Gather"):
            return super().make_embedding_lookup(embedding, basename, lm_head)
        # an untied int4 embedding: the builder's whole-graph pass makes it a GatherBlockQuantized
        weight_name, ids, output = (
            "model.embed_tokens.weight",
            self.input_names["input_ids"],
            f"{name}/output_0",
        )
        weight = embedding.detach().to(to_torch_dtype(self.io_dtype)).contiguous().numpy()
        elem = helper.np_dtype_to_tensor_dtype(weight.dtype)
        self._emit_quantised(
            helper.make_node("Gather", [weight_name, ids], [output], name=name),
            [helper.make_tensor_value_info(ids, onnx.TensorProto.INT64, ["b", "s"])],
            [helper.make_tensor_value_info(output, elem, ["b", "s", weight.shape[1]])],
            weight_name,
            weight,
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


def _checkpoint_dtype(config) -> torch.dtype:
    d = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
    return d if isinstance(d, torch.dtype) else getattr(torch, str(d).removeprefix("torch."))


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
    options = dict(options)
    effective = options.pop("_effective_builder_config", None)
    if effective is not None:
        precision = effective.precision
    hf = options.pop("hf_details")
    config = hf["hf_config"]
    io_dtype = gb.set_io_dtype(precision, ep, options)
    onnx_dtype = gb.set_onnx_dtype(precision, options)
    os.makedirs(out, exist_ok=True)
    os.makedirs(cache_dir, exist_ok=True)
    cls = StreamingQwen3Moe if kind == "moe" else StreamingQwen3
    model = cls(config, io_dtype, onnx_dtype, ep, str(cache_dir), options)
    model.checkpoint, model.out_dir = checkpoint, Path(out)
    model.make_model(str(checkpoint.info.path))
    model.save_model(str(out))
    model.make_genai_config(config, hf["extra_kwargs"], str(out))
    model.save_processing(hf["hf_name"], hf["extra_kwargs"], str(out))
    if kind == "moe":
        cfg_path = Path(out) / "genai_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["model"]["type"] = GENAI_MODEL_TYPE
        cfg_path.write_text(json.dumps(cfg, indent=4) + "\n")
