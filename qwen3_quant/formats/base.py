"""What a quantisation format provides. Each format is one package under ``qwen3_quant.formats``
with a ``FORMAT`` object implementing :class:`QuantFormat`, registered by name in ``formats/__init__``.

Format packages import their heavy libraries inside functions, so that listing formats, parsing
options and estimating sizes stay instant.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..catalog.architecture import ArchShape

if TYPE_CHECKING:
    from ..checkpoint import CheckpointInfo
    from ..sources import ModelSource

GiB = 1024**3


@dataclass(frozen=True)
class SizeEstimate:
    artifact_bytes: int
    quantise_peak_bytes: int


# progress callback: (description, completed, total)
Progress = Callable[[str, float, float], None]


def no_progress(_desc: str, _done: float, _total: float) -> None:
    return None


class QuantFormat(ABC):
    """One artifact format (gguf, gptq, awq, onnx)."""

    name: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that brings its libraries
    runtime: ClassVar[str]  # the runtime that serves and validates it
    table_types: ClassVar[Sequence[str]]  # variants `qwen3-quant models` shows
    cell_axis: ClassVar[str]  # the option whose list of values a build file splits into cells
    # the model card: what an artifact is, and the Hub's library_name for it
    card_description: ClassVar[str]
    hub_library: ClassVar[str] = "transformers"
    # the build plan's time estimate for one variant on a CPU: seconds per billion parameters, floor
    seconds_per_billion: ClassVar[float] = 600.0
    min_seconds: ClassVar[float] = 60.0

    @abstractmethod
    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        """Artifact size and peak memory needed to produce it, from tensor shapes alone."""

    def nominal_bits(self, variant: str) -> int:
        """Bits per weight that pick the default gates for a variant."""
        return 16

    def available(self) -> bool:
        """Whether this format's libraries are installed (quantising needs them; estimating does not)."""
        return True

    # --- quantisation; formats that can quantise override all of these -----------------------
    implemented: ClassVar[bool] = False

    def parse_options(self, options: dict[str, Any]) -> Any:
        """Validate the CLI / library options into this format's config dataclass, before any heavy
        work. ``options`` holds only the options the user gave; unknown or inapplicable ones raise
        :class:`~qwen3_quant.errors.UsageError` naming the option and what applies instead."""
        raise NotImplementedError(f"{self.name}: quantisation is not implemented yet")

    def calibrates(self, config: Any) -> bool:
        """Whether a run with ``config`` reads calibration data (a build gives its ``[calib]`` to
        these cells only)."""
        return False

    def artifact_name(self, model_name: str, config: Any) -> str:
        """The artifact folder / Hub repo name, e.g. ``Qwen3-8B-GGUF``, ``Qwen3-8B-GPTQ-Int4``."""
        raise NotImplementedError

    def variants(self, config: Any) -> list[str]:
        """The variants one run writes (several GGUF types; one for other formats)."""
        raise NotImplementedError

    def quantize(
        self,
        source: ModelSource,
        info: CheckpointInfo,
        config: Any,
        out_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress = no_progress,
    ) -> list[str]:
        """Write the artifact under ``out_dir`` (temporary names, renamed when complete; variants
        already present and intact are kept unless ``overwrite``), record each variant with
        :func:`qwen3_quant.artifact.record_variant`, and return the variant names written or kept."""
        raise NotImplementedError


def option_flag(option: str) -> str:
    """The CLI spelling of a quantize option, for messages: ``block_size`` -> ``--block-size``."""
    return {"types": "--type", "sym": "--sym/--asym"}.get(option, "--" + option.replace("_", "-"))


def linear_tensors(arch: ArchShape):
    """The weight tensors weight-only int quantisers (GPTQ, AWQ, MatMulNBits) act on."""
    from ..catalog.architecture import LINEAR_ROLES, iter_tensors

    return [t for t in iter_tensors(arch, stacked=True) if t.role in LINEAR_ROLES]


def kept_tensor_bytes(arch: ArchShape, bytes_per_param: float) -> int:
    """Tensors kept unquantised by weight-only int formats: embeddings, lm_head, norms, router."""
    from ..catalog.architecture import LINEAR_ROLES, iter_tensors

    return int(
        sum(t.numel for t in iter_tensors(arch, stacked=True) if t.role not in LINEAR_ROLES) * bytes_per_param
    )


def largest_layer_params(arch: ArchShape) -> int:
    from ..catalog.architecture import iter_tensors

    per_layer: dict[int, int] = {}
    for t in iter_tensors(arch, stacked=True):
        if t.layer >= 0:
            per_layer[t.layer] = per_layer.get(t.layer, 0) + t.total_numel
    return max(per_layer.values()) if per_layer else 0
