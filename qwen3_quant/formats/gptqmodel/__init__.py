"""GPTQ and AWQ through GPTQModel (one backend, two formats)."""

from __future__ import annotations

import re

from ...catalog.architecture import ArchShape
from ...errors import UsageError
from ..base import GiB, QuantFormat, SizeEstimate, kept_tensor_bytes, largest_layer_params, linear_tensors

_VARIANT = re.compile(r"^w(?P<bits>[2-8])(?:g(?P<group>-?\d+))?$", re.I)


def parse_variant(variant: str) -> tuple[int, int]:
    """``W4g128`` -> (4, 128)."""
    m = _VARIANT.match(variant.strip())
    if not m:
        raise UsageError(
            f"bad weight-only variant '{variant}'", hint="write it as W<bits>g<group>, e.g. W4g128"
        )
    return int(m["bits"]), int(m["group"] or 128)


def weight_only_bytes(arch: ArchShape, bits: int, group: int, *, g_idx: bool) -> int:
    """Packed int weights, fp16 scales and packed zero points per group, kept tensors in bf16."""
    total = kept_tensor_bytes(arch, 2)
    for t in linear_tensors(arch):
        out_f, in_f = t.shape
        groups = in_f // group if group > 0 else 1
        one = out_f * in_f * bits // 8  # qweight
        one += groups * out_f * 2  # scales (fp16)
        one += groups * out_f * bits // 8  # qzeros
        if g_idx:
            one += in_f * 4
        total += one * t.count
    return total


class _GPTQModelFormat(QuantFormat):
    extra = "gptq"
    runtime = "transformers+gptqmodel"
    table_types = ("W4g128", "W8g128")
    g_idx = False

    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        bits, group = parse_variant(variant)
        # GPTQModel keeps the bf16 model in memory and works one layer at a time in fp32
        # (weights, Hessians of every linear's input, calibration activations for 128 x 2048 tokens)
        layer = largest_layer_params(arch)
        hessians = sum(t.shape[1] ** 2 * 4 * t.count for t in linear_tensors(arch) if t.layer == 0)
        acts = 128 * 2048 * arch.hidden_size * 4 * 2
        peak = 2 * sum(t.total_numel for t in linear_tensors(arch)) + kept_tensor_bytes(arch, 2)
        peak += 3 * 4 * layer + hessians + acts + int(1.5 * GiB)
        return SizeEstimate(weight_only_bytes(arch, bits, group, g_idx=self.g_idx), peak)


class GPTQFormat(_GPTQModelFormat):
    name = "gptq"
    g_idx = True


class AWQFormat(_GPTQModelFormat):
    name = "awq"
    table_types = ("W4g128",)


GPTQ_FORMAT = GPTQFormat()
AWQ_FORMAT = AWQFormat()
