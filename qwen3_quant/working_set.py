"""The memory validation needs, from the catalog's shapes alone (pure Python, no torch).

Validation runs in two phases in one process: the unquantised reference (a decoder layer at a
time, :mod:`qwen3_quant.eval.layerwise_reference`) unless it is stored already, then the artifact
in its runtime, scored window by window. Its peak is the larger phase. The runtime's own share
is declared by each format (``Format.runtime_peak_bytes``); the scorer's share is here. The
constants the streaming code uses live here too, so the estimate and the code cannot drift apart.
"""

from __future__ import annotations

from .catalog.architecture import ArchShape
from .formats.base import largest_layer_params, linear_tensors

GiB = 1024**3
# Python with torch, transformers and numpy imported (measured 0.37 to 0.55 GB of VmHWM; an
# earlier 0.84 GB reading was ru_maxrss, which keeps the peak of the process that started it)
PROCESS_BASE_BYTES = int(0.55 * GiB)
# the GPTQModel worker with torch, transformers and GPTQModel imported (measured 0.63 GB of VmHWM
# quantising Qwen3-Micro, 5M parameters, in the development environment; a fresh install of the same
# versions, CI's clean clone, peaked about 0.1 GB higher on the same job)
GPTQMODEL_BASE_BYTES = int(0.8 * GiB)
HEAD_SLICE_ROWS = 16384  # rows of the embedding table / output head read at once
SCORE_BLOCK = 64  # positions of a window scored at once


def reference_peak_bytes(arch: ArchShape, *, n_tokens: int, ctx: int, dtype: str = "float32") -> int:
    """Peak RSS of computing the reference a layer at a time over ``n_tokens`` in windows of ``ctx``.

    One layer in the compute type (a MoE layer's experts twice while they are stacked), every
    window's hidden states in fp32, one window's activations (attention scores of every head, the
    MLP's intermediate products), or, in the output-head phase, one head slice and its logits.
    """
    width = 4 if dtype == "float32" else 2
    n_win = min(ctx, n_tokens)
    layer = largest_layer_params(arch) * width * (2 if arch.is_moe else 1)
    hidden = 4 * n_tokens * arch.hidden_size + 2 * (4 + width) * n_win * arch.hidden_size
    inner = max(arch.intermediate_size, arch.moe_intermediate_size * max(1, arch.num_experts_per_tok))
    acts = 4 * arch.num_attention_heads * n_win * n_win + 4 * n_win * n_win + 3 * width * n_win * inner
    head = 6 * HEAD_SLICE_ROWS * arch.hidden_size + 4 * 4 * n_win * HEAD_SLICE_ROWS
    return PROCESS_BASE_BYTES + hidden + max(layer + acts, head)


def kv_cache_bytes(arch: ArchShape, ctx: int, width: int) -> int:
    """Keys and values of every layer for ``ctx`` positions, ``width`` bytes a number."""
    return 2 * arch.num_hidden_layers * arch.num_key_value_heads * arch.head_dim * ctx * width


def scoring_bytes(arch: ArchShape, ctx: int, *, copies: bool = True) -> int:
    """The scorer's arrays beside an artifact runtime: the window's logits as the runner returns
    them (unless the runner hands out blocks in place), and one block's log-probabilities with
    their temporaries."""
    window = 4 * ctx * arch.vocab_size if copies else 0
    return window + 4 * 4 * SCORE_BLOCK * arch.vocab_size


def validation_peak_bytes(reference: int, runtime: int) -> int:
    """Peak of a validation whose reference and artifact phases need ``reference`` and ``runtime``
    bytes (the reference is computed first, in the same process, and freed)."""
    return max(reference, runtime)


def validation_estimate(fmt, arch: ArchShape, variant: str, options=None) -> int:
    """Peak RSS of validating one variant with these evaluation options (defaults when none): the
    reference computed here (not yet stored) and the artifact scored in ``fmt``'s runtime."""
    from .eval.options import EvalOptions
    from .eval.protocol import effective_ctx

    opts = options or EvalOptions()
    ctx = effective_ctx(opts.ctx, arch.max_position_embeddings)
    n_tokens = opts.token_budget
    ref = reference_peak_bytes(arch, n_tokens=n_tokens, ctx=ctx, dtype=opts.reference_dtype)
    return validation_peak_bytes(ref, fmt.runtime_peak_bytes(arch, variant, min(ctx, n_tokens)))


def gptq_quantise_peak_bytes(arch: ArchShape, *, samples: int, seq: int) -> int:
    """Peak host RSS of GPTQModel quantising on the CPU with checkpoint-backed loading (its
    ``offload_to_disk``): the model is a meta-device shell, one decoder layer is read from the
    shards at a time and each quantised module goes to the offload folder.

    The worker process with GPTQModel imported; the embedding table in bf16 (the calibration
    inputs are captured through it before it is offloaded); one layer in bf16 twice (GPTQModel's
    working and pristine copies) and once in fp32 (each module's working weight as it is solved);
    the fp32 Hessians of every linear of the layer (a MoE layer's experts each have their own) and
    two working copies (damped, inverted) of the one being solved; the calibration samples' hidden states in and out of
    the layer (bf16); one sample's activations inside the layer. Does not grow with depth.
    Checked against measured peaks in ``tests/test_gptq_memory.py`` and benchmarks/memory.md.
    """
    layer0 = [t for t in linear_tensors(arch) if t.layer == 0]
    hessians = sum(t.shape[1] ** 2 * 4 * t.count for t in layer0)
    solving = 2 * max((t.shape[1] ** 2 * 4 for t in layer0), default=0)
    hidden = 2 * 2 * samples * seq * arch.hidden_size
    inner = max(arch.intermediate_size, arch.moe_intermediate_size * max(1, arch.num_experts_per_tok))
    acts = 4 * arch.num_attention_heads * seq * seq + 3 * 4 * seq * inner
    embed = 2 * arch.vocab_size * arch.hidden_size
    layer = (2 * 2 + 4) * largest_layer_params(arch)
    # a quarter more for the allocator's slack and GPTQModel's smaller buffers (fitted: the
    # measured peak of a 12-layer tiny model was 3% above the sum without it)
    return GPTQMODEL_BASE_BYTES + int(1.25 * (embed + layer + hessians + solving + hidden + acts))
