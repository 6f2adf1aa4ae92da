"""Running onnxruntime-genai's model builder on a local checkpoint, in this process.

Dense Qwen3 goes through the builder's own ``create_model``; Qwen3-MoE through the project's
builder subclass (:mod:`.moe`). The builder prints its progress; that text goes to this module's
logger at debug level and its "Reading layer N" lines drive the progress callback.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...artifact import library_versions
from ...catalog.architecture import ArchShape
from ...errors import CheckpointError, require
from ..base import Progress, no_progress
from . import graph
from .config import OnnxConfig

if TYPE_CHECKING:
    from ...checkpoint import CheckpointInfo

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = {"Qwen3ForCausalLM": "dense", "Qwen3MoeForCausalLM": "moe"}
BUILDER = "onnxruntime-genai model builder"
MOE_EXPORTER = "qwen3-quant Qwen3-MoE exporter (onnxruntime-genai builder + MoE/QMoE)"
_NOISY = ("onnxruntime.quantization", "neural_compressor", "onnx_ir")
_LAYER = re.compile(r"Reading layer (\d+)")


@dataclass(frozen=True)
class BuildInfo:
    exporter: str
    execution_provider: str
    extra_options: dict[str, str]
    tied_embedding_shared: bool


def model_kind(config: dict) -> str:
    """``dense`` or ``moe``; raises :class:`CheckpointError` for an architecture the builder cannot take."""
    arch = (config.get("architectures") or [None])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"the ONNX builder cannot convert architecture {arch!r}",
            hint="--format onnx takes Qwen3ForCausalLM and Qwen3MoeForCausalLM checkpoints "
            "(config.json 'architectures')",
        )
    return SUPPORTED_ARCHITECTURES[arch]


def builder_options(cfg: OnnxConfig, arch: ArchShape) -> tuple[str, dict[str, str]]:
    """The execution provider and extra options the builder gets for ``cfg``."""
    opts = {"hf_token": "false", "hf_remote": "false"}
    ep = "cpu"
    if cfg.precision == "fp16":
        # the builder's CPU recipe has no fp16 GroupQueryAttention graph (its fp16 CPU graph fails at
        # decode); its CUDA recipe does, and runs on the CPU once q/k norms are separate nodes
        ep = "cuda"
        opts["fuse_qk_norm_gqa"] = "false"
    if cfg.is_int:
        opts["block_size"] = str(cfg.block_size)
        opts["accuracy_level"] = str(cfg.accuracy_level)
        opts["algo_config"] = "k_quant" if cfg.quantizer == "k_quant" else "default"
    if arch.tie_word_embeddings and cfg.precision == "int8":
        # GatherBlockQuantized takes 8 bits but the builder shares int4 only: shared after the build
        opts["shared_embeddings"] = "false"
    if arch.is_moe and cfg.is_int:
        opts["moe_quant_type"] = cfg.precision
        opts["qmoe_block_size"] = str(cfg.block_size)
        sparse = [i for i in range(arch.num_hidden_layers) if arch.layer_is_sparse(i)]
        opts["nodes_to_exclude"] = ",".join(f"/model/layers.{i}/moe/router/MatMul" for i in sparse)
    return ep, opts


def builder_version() -> str:
    return library_versions(("onnxruntime-genai",)).get("onnxruntime-genai", "unknown")


class _LineSink(io.TextIOBase):
    """Collects the builder's printed text, logs it, and turns 'Reading layer N' into progress."""

    def __init__(self, progress: Progress, layers: int):
        self.progress, self.layers, self.buf = progress, layers, ""

    def write(self, s: str) -> int:
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            line = line.strip()
            if not line:
                continue
            log.debug("builder: %s", line[:300])
            m = _LAYER.search(line)
            if m:
                self.progress("building ONNX graph", int(m.group(1)) + 1, self.layers)
        return len(s)


@contextlib.contextmanager
def _quiet_builder(progress: Progress, layers: int):
    root = logging.getLogger()
    # onnxruntime.quantization calls logging.basicConfig(level=INFO) when imported; with a handler
    # in place that is a no-op instead of turning on INFO output for every library
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder:
        root.addHandler(placeholder)
    saved = {n: logging.getLogger(n).level for n in _NOISY}
    if not log.isEnabledFor(logging.DEBUG):
        for n in _NOISY:
            logging.getLogger(n).setLevel(logging.WARNING)
    sink = _LineSink(progress, layers)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
        if placeholder:
            root.removeHandler(placeholder)


def run_builder(
    info: CheckpointInfo,
    out: Path,
    cfg: OnnxConfig,
    cache_dir: Path,
    *,
    progress: Progress = no_progress,
    streaming: bool = True,
) -> BuildInfo:
    """Build the ONNX folder for ``cfg`` from the checkpoint ``info`` into ``out`` (which it creates).

    ``streaming`` (the default) makes the graph a decoder layer at a time (:mod:`.stream`); without
    it the builder loads the whole checkpoint and quantises the finished graph, as it does itself.
    """
    src, config, arch = info.path, info.config, info.arch
    kind = model_kind(config)
    require("onnx", "onnx")
    require("onnxruntime", "onnx")
    ep, opts = builder_options(cfg, arch)
    with _quiet_builder(progress, arch.num_hidden_layers):
        gb = require("onnxruntime_genai.models.builder", "onnx")
        extra = [f"{k}={v}" for k, v in opts.items()]
        try:
            parsed = gb.parse_extra_options(
                None, str(src), str(out), cfg.precision, ep, str(cache_dir), extra
            )
            if streaming:
                from ...layerwise import CheckpointTensors
                from .stream import create_streaming

                create_streaming(kind, CheckpointTensors(info), out, cfg.precision, ep, cache_dir, parsed)
            elif kind == "moe":
                from .moe import create_qwen3_moe

                create_qwen3_moe(src, out, cfg.precision, ep, cache_dir, parsed)
            else:
                gb.create_model(None, str(src), str(out), cfg.precision, ep, str(cache_dir), **parsed)
        except (NotImplementedError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
            raise CheckpointError(
                f"onnxruntime-genai {builder_version()} could not convert {src.name}: {first}",
                hint="check the checkpoint with `qwen3-quant check`; the builder log is at debug level (-vv)",
            ) from exc
    if ep != "cpu":
        graph.set_cpu_provider(out)
    # the builder quantises a tied int4 embedding only (shared with the lm_head); the others here
    if cfg.precision == "int8" and arch.tie_word_embeddings:
        graph.share_int8_embedding(out)
    elif cfg.is_int and not arch.tie_word_embeddings:
        graph.quantize_embedding(out, cfg.bits, cfg.block_size)
    shared = arch.tie_word_embeddings and not graph.has_initializer(out, graph.EMBED_WEIGHT)
    return BuildInfo(MOE_EXPORTER if kind == "moe" else BUILDER, ep, opts, shared)
