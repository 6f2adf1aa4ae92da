"""The MLX format's options and variant names, checked before any heavy work.

Variants are named as mlx-community names its repos: ``4bit``, ``8bit`` (affine, group size 64,
mlx-lm's default), ``4bit-gs32`` for another group size, and mlx-lm's mixed-precision recipes as
``mixed-3-6bit`` (3-bit weights, 6 bits for the lm_head and, in some layers, v_proj and
down_proj). The artifact is ``<model>-<variant>``: ``Qwen3-8B-4bit``, ``Qwen3-30B-A3B-8bit``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from .. import int_choice
from ..base import Option, takes

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
DEFAULT_BITS = 4
DEFAULT_GROUP_SIZE = 64  # mlx-lm's default and what mlx-community's repos use
# mlx-lm's mixed recipes (mlx_lm.convert.QUANT_RECIPES): (low bits, high bits)
RECIPES = {"mixed_2_6": (2, 6), "mixed_3_4": (3, 4), "mixed_3_6": (3, 6), "mixed_4_6": (4, 6)}

OPTIONS = (
    Option("bits", "Affine weight bits: 4 or 8.", int, default=DEFAULT_BITS),
    Option("group_size", "Group size: 32, 64 or 128.", int, default=DEFAULT_GROUP_SIZE),
    Option(
        "recipe",
        "mlx-lm mixed-precision recipe instead of --bits: " + ", ".join(RECIPES) + ".",
        metavar="RECIPE",
    ),
)

_VARIANT = re.compile(r"^(?:(?P<bits>\d+)bit|mixed-(?P<lo>\d)-(?P<hi>\d)bit)(?:-gs(?P<group>\d+))?$", re.I)


@dataclass(frozen=True)
class MLXConfig:
    """One MLX artifact: affine ``bits`` with ``group_size``, or a mixed ``recipe`` of mlx-lm."""

    bits: int = DEFAULT_BITS
    group_size: int = DEFAULT_GROUP_SIZE
    recipe: str | None = None

    @property
    def variant(self) -> str:
        if self.recipe:
            lo, hi = RECIPES[self.recipe]
            base = f"mixed-{lo}-{hi}bit"
        else:
            base = f"{self.bits}bit"
        return base if self.group_size == DEFAULT_GROUP_SIZE else f"{base}-gs{self.group_size}"

    @property
    def low_bits(self) -> int:
        """The bits most weights get (a recipe's low width)."""
        return RECIPES[self.recipe][0] if self.recipe else self.bits


def parse_variant(variant: str) -> MLXConfig:
    """``4bit`` -> MLXConfig(4, 64); ``mixed-3-6bit-gs32`` -> MLXConfig(3, 32, "mixed_3_6")."""
    m = _VARIANT.match(variant.strip())
    recipe = f"mixed_{m['lo']}_{m['hi']}" if m and m["lo"] else None
    group = int(m["group"]) if m and m["group"] else DEFAULT_GROUP_SIZE
    bits = RECIPES[recipe][0] if recipe in RECIPES else int(m["bits"]) if m and m["bits"] else 0
    if (
        not m
        or (recipe and recipe not in RECIPES)
        or (not recipe and bits not in BITS)
        or group not in GROUP_SIZES
    ):
        raise UsageError(
            f"bad MLX variant '{variant}'",
            hint="write it as 4bit, 8bit, 4bit-gs32 or mixed-3-6bit (mlx-community's names)",
        )
    return MLXConfig(bits, group, recipe)


def parse_mlx_options(options: dict[str, Any]) -> MLXConfig:
    """Validate the options the user gave (``None`` values count as not given)."""
    from .. import option_flag

    given = {k: v for k, v in options.items() if v is not None}
    names = [o.name for o in OPTIONS]
    for key in given:
        if key not in names:
            raise UsageError(f"{option_flag(key)} does not apply to --format mlx", hint=takes("MLX", OPTIONS))
    recipe = given.get("recipe")
    if recipe is not None:
        recipe = str(recipe).strip().lower().replace("-", "_")
        if recipe not in RECIPES:
            raise UsageError(
                f"unknown MLX recipe '{given['recipe']}'", hint="choose one of: " + ", ".join(RECIPES)
            )
        if "bits" in given:
            raise UsageError(
                "--recipe and --bits both set the weight bits",
                hint=f"{recipe} uses {RECIPES[recipe][0]} and {RECIPES[recipe][1]} bits; drop --bits",
            )
    bits = int_choice(given, "bits", BITS, DEFAULT_BITS, fmt="MLX")
    group = int_choice(given, "group_size", GROUP_SIZES, DEFAULT_GROUP_SIZE, fmt="MLX")
    if recipe:
        bits = RECIPES[recipe][0]
    return MLXConfig(bits, group, recipe)
