"""What a quantisation format provides: everything the rest of the program asks of a format is
declared by its :class:`QuantFormat` object, in its own package, and registered once
(``formats/__init__.py``, or :func:`qwen3_quant.formats.register` from outside the package).

- **options**: :class:`Option` declarations; the ``quantize`` command builds its flags from them,
  build files take the same names, provenance commands spell them back.
- **runtimes**: :class:`Runtime` declarations (name and runner class) and :meth:`recognises`, how
  an artifact of the format is told apart when it has no manifest; :meth:`eval_targets`, what the
  evaluation loads for each variant.
- **names**: :meth:`artifact_name` (the folder / Hub repo) and the variants a run writes.
- **card facts**: :attr:`card_description`, :attr:`hub_library`, :attr:`recipe_labels`,
  :meth:`card_tags` and :meth:`usage` (the "How to run it" snippets).
- **keep or rebuild**: the format builds a :class:`~qwen3_quant.artifact.VariantKey` from the
  settings that change its files and follows :func:`~qwen3_quant.artifact.decide_variant`
  (:attr:`shares_folder`, :attr:`rebuild_damaged` say how).
- **test double**: :meth:`write_test_double` writes fake files shaped like a real artifact's, for
  the tests of the tools that consume artifacts (publish, build).

The contract is checked when a format registers (:func:`check_contract`), not when a user reaches
a missing piece. Format packages import their heavy libraries inside functions, so that listing
formats, parsing options and estimating sizes stay instant.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..catalog.architecture import ArchShape

if TYPE_CHECKING:
    from ..artifact import Manifest
    from ..checkpoint import CheckpointInfo
    from ..device import Device
    from ..provenance import Provenance
    from ..sources import ModelSource

GiB = 1024**3


@dataclass(frozen=True)
class SizeEstimate:
    artifact_bytes: int
    quantise_peak_bytes: int  # host memory
    gpu_peak_bytes: int | None = None  # GPU memory when quantising on CUDA (None: the GPU is not used)


# progress callback: (description, completed, total)
Progress = Callable[[str, float, float], None]


def no_progress(_desc: str, _done: float, _total: float) -> None:
    return None


@dataclass(frozen=True)
class Option:
    """One option of ``quantize`` (the keyword in Python and build files, a flag on the CLI).

    ``type`` is ``str``, ``int``, ``bool`` (an on/off pair of flags) or ``list`` (comma-separated
    on the CLI). ``default`` is what ``--help`` shows; the format's ``parse_options`` applies it.
    """

    name: str
    help: str
    type: type = str
    flag: str = ""  # default: --name-with-dashes
    off_flag: str = ""  # bool options: default --no-<flag>
    default: Any = None
    metavar: str = ""

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def cli_off_flag(self) -> str:
        return self.off_flag or "--no-" + self.cli_flag.removeprefix("--")

    @property
    def spelling(self) -> str:
        """How messages name it: ``--type``, ``--imatrix``; a pair of two words: ``--sym/--asym``."""
        return f"{self.cli_flag}/{self.off_flag}" if self.off_flag else self.cli_flag

    @property
    def listing(self) -> str:
        """How a list of what a format takes names it: ``--imatrix/--no-imatrix``."""
        return f"{self.cli_flag}/{self.cli_off_flag}" if self.type is bool else self.cli_flag

    def words(self, value: Any) -> list[str]:
        """The command-line words that give this option ``value``."""
        if value is None:
            return []
        if self.type is bool:
            return [self.cli_flag if value else self.cli_off_flag]
        if isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        return [self.cli_flag, str(value)]


CALIB = Option(
    "calib",
    "Calibration: a mix name (qwen3-quant calib list), a .toml mix, or your own .txt / .jsonl "
    "file (default: default, which ships with the package).",
    metavar="MIX|FILE",
)
CALIB_SAMPLES = Option("calib_samples", "Override the mix's sample count.", int)
# not a format option: quantize, eval and build take it for every format (formats declare
# gpu_quantise to say whether their quantisation uses it; validation always does)
DEVICE = Option(
    "device",
    "Where to compute: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N.",
    default="auto",
    metavar="DEVICE",
)


def takes(label: str, options: Sequence[Option]) -> str:
    """``GGUF takes --type, --imatrix/--no-imatrix, ...``: a hint for an option that does not apply."""
    return f"{label} takes " + ", ".join(o.listing for o in options)


@dataclass(frozen=True)
class Runtime:
    """A runtime that serves (and so validates) a format's artifacts."""

    name: str  # recorded in every evaluation result: "llama.cpp", "gptqmodel", "onnxruntime"
    runner: str  # "package.module:RunnerClass", imported when an artifact is evaluated
    label: str = ""  # how cards name it: "transformers + GPTQModel kernels"

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class EvalTarget:
    """One thing to evaluate: what the runtime loads, which runtime, which variant, and the
    artifact folder whose manifest describes it (``None`` for a plain model folder or file)."""

    path: Path
    runtime: str
    variant: str | None
    manifest_dir: Path | None


@dataclass(frozen=True)
class UsageContext:
    """What a format's usage snippets may refer to. ``repo_id`` None means a local publish: the
    snippets then load from the folder ``name``."""

    fmt: str
    name: str  # repo / folder name
    repo_id: str | None
    variant_files: dict[str, list[str]]  # variant -> its files, in manifest order
    files: list[str]  # every file of the publish (variants' and shared), relative paths
    validated_in: str  # runtime(s) the validation ran in
    moe: bool = False


@dataclass(frozen=True)
class TestDouble:
    """Fake files written by :meth:`QuantFormat.write_test_double` and what to record for them."""

    __test__ = False  # not a pytest test class
    files: list[str]
    shared_files: list[str]
    recipe: dict[str, Any]


class QuantFormat(ABC):
    """One artifact format. Subclasses declare the class attributes and implement every abstract
    method; :func:`check_contract` verifies both when the format registers."""

    name: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that brings its libraries
    libraries: ClassVar[tuple[str, ...]]  # distributions whose versions manifests record
    options: ClassVar[tuple[Option, ...]]
    runtimes: ClassVar[tuple[Runtime, ...]]  # the first one validates
    table_types: ClassVar[Sequence[str]]  # variants `qwen3-quant models` shows
    cell_axis: ClassVar[str]  # the option whose list of values a build file splits into cells
    card_description: ClassVar[str]  # the model card: what an artifact is ...
    hub_library: ClassVar[str]  # ... and the Hub's library_name for it
    recipe_labels: ClassVar[Mapping[str, str]] = {}  # recipe key -> the card's row label
    noisy_loggers: ClassVar[tuple[str, ...]] = ()  # library loggers the CLI quietens
    shares_folder: ClassVar[bool] = False  # several variants in one artifact folder (GGUF types)
    rebuild_damaged: ClassVar[bool] = False  # a damaged variant is rebuilt without --overwrite
    variant_counts_shared_files: ClassVar[bool] = True  # a variant's size includes the shared files
    gpu_quantise: ClassVar[bool] = False  # quantize() computes on a CUDA device when given one
    # the build plan's time estimate for one variant on a CPU: seconds per billion parameters, floor
    seconds_per_billion: ClassVar[float] = 600.0
    min_seconds: ClassVar[float] = 60.0
    # the build's disk estimate: bf16 copies of the source a run keeps beside it (GGUF's base file)
    scratch_source_copies: ClassVar[float] = 0.0
    # ... and copies of the artifact beside it while it is written (GPTQModel's offload folder)
    scratch_artifact_copies: ClassVar[float] = 0.0
    needs_gpu: ClassVar[bool] = False  # quantising needs a CUDA GPU (builds route such cells to one)

    # --- facts ------------------------------------------------------------------------------

    @property
    def runtime(self) -> str:
        """The runtime that validates this format's artifacts."""
        return self.runtimes[0].name

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def option_words(self, options: Mapping[str, Any]) -> list[str]:
        """Command-line words for these option values (declared options only, in declared order)."""
        return [w for o in self.options for w in o.words(options.get(o.name))]

    def card_tags(self, recipes: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Extra Hub tags for a publish of these variants' recipes."""
        return []

    # --- sizes ------------------------------------------------------------------------------

    @abstractmethod
    def estimate(self, arch: ArchShape, variant: str) -> SizeEstimate:
        """Artifact size and peak memory needed to produce it, from tensor shapes alone."""

    def runtime_peak_bytes(self, arch: ArchShape, variant: str, ctx: int) -> int:
        """Memory that scoring windows of ``ctx`` tokens of a variant in this format's runtime
        needs: the process, the loaded artifact, the KV cache, the scorer's arrays (a file the
        runtime maps is page cache, not counted). The default assumes the runtime holds the
        artifact twice (as read, and in its own layout) and an fp32 cache; a format whose
        runtime is measured declares its own."""
        from ..working_set import PROCESS_BASE_BYTES, kv_cache_bytes, scoring_bytes

        art = self.estimate(arch, variant).artifact_bytes
        return PROCESS_BASE_BYTES + 2 * art + kv_cache_bytes(arch, ctx, 4) + scoring_bytes(arch, ctx)

    @abstractmethod
    def nominal_bits(self, variant: str) -> int:
        """Bits per weight that pick the default gates for a variant."""

    # --- quantising -------------------------------------------------------------------------

    @abstractmethod
    def available(self) -> bool:
        """Whether this format's libraries are installed (quantising needs them; estimating does not)."""

    @abstractmethod
    def parse_options(self, options: dict[str, Any]) -> Any:
        """Validate the CLI / library options into this format's config, before any heavy work.
        ``options`` holds only the options the user gave; unknown or inapplicable ones raise
        :class:`~qwen3_quant.errors.UsageError` naming the option and what applies instead."""

    @abstractmethod
    def calibrates(self, config: Any) -> bool:
        """Whether a run with ``config`` reads calibration data (a build gives its ``[calib]`` to
        these cells only)."""

    @abstractmethod
    def artifact_name(self, model_name: str, config: Any) -> str:
        """The artifact folder / Hub repo name, e.g. ``Qwen3-8B-GGUF``, ``Qwen3-8B-GPTQ-Int4``."""

    @abstractmethod
    def variants(self, config: Any) -> list[str]:
        """The variants one run writes (several GGUF types; one for other formats)."""

    @abstractmethod
    def quantize(
        self,
        source: ModelSource,
        info: CheckpointInfo,
        config: Any,
        out_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress = no_progress,
        provenance: Provenance | None = None,
        device: Device | None = None,
    ) -> list[str]:
        """Write the artifact under ``out_dir`` (temporary names, renamed when complete; variants
        kept or rebuilt by :func:`~qwen3_quant.artifact.decide_variant`), record each variant with
        :func:`~qwen3_quant.artifact.record_variant`, and return the variant names written or kept.
        ``device`` is where to compute (the CPU when ``None``; always the CPU unless the format
        declares :attr:`gpu_quantise`)."""

    # --- serving ----------------------------------------------------------------------------

    @abstractmethod
    def recognises(self, path: Path) -> str | None:
        """The runtime that serves ``path`` when it is this format's artifact (file or folder,
        without a manifest), else ``None``."""

    def eval_targets(self, path: Path, manifest: Manifest, variant: str | None = None) -> list[EvalTarget]:
        """What to evaluate in an artifact folder (or a file in it): by default the folder, once
        per variant, in the validating runtime."""
        from ..errors import UsageError

        folder = path if path.is_dir() else path.parent
        names = list(manifest.variants)
        if path.is_file():
            names = [n for n in names if path.name in manifest.variants[n].files] or names
        if variant:
            if variant not in manifest.variants:
                raise UsageError(f"{path} has no variant {variant}", hint="variants: " + ", ".join(names))
            names = [variant]
        return [EvalTarget(path, self.runtime, n, folder) for n in names]

    @abstractmethod
    def usage(self, ctx: UsageContext) -> str:
        """The model card's "How to run it" snippets (markdown, ``###`` sections), for each runtime
        that loads the format."""

    # --- tests ------------------------------------------------------------------------------

    @abstractmethod
    def write_test_double(self, folder: Path, model: str, variant: str, bits: int, **kw: Any) -> TestDouble:
        """Write fake files (random bytes, real names and layout) for one variant into ``folder``,
        for tests of the tools that consume artifacts. Nothing written here loads in a runtime."""


def check_contract(fmt: QuantFormat) -> None:
    """Refuse a format that leaves part of the contract undeclared, when it registers."""
    from ..errors import FormatContractError

    cls = type(fmt)
    missing = [
        n
        for n in (
            "name",
            "extra",
            "libraries",
            "options",
            "runtimes",
            "table_types",
            "cell_axis",
            "card_description",
            "hub_library",
        )
        if not hasattr(cls, n)
    ]
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    problems = [f"declares no {n}" for n in missing] + [f"does not implement {m}()" for m in abstract]
    if not missing:
        if not fmt.name or fmt.name != fmt.name.lower():
            problems.append(f"has a bad name {fmt.name!r} (lower case, not empty)")
        if not fmt.runtimes or not all(isinstance(r, Runtime) and ":" in r.runner for r in fmt.runtimes):
            problems.append("must declare Runtime(name, 'module:RunnerClass') entries")
        if not all(isinstance(o, Option) for o in fmt.options):
            problems.append("options must be Option declarations")
        names = [o.name for o in fmt.options]
        if len(set(names)) != len(names):
            problems.append("declares an option twice")
        if fmt.cell_axis and fmt.cell_axis not in names:
            problems.append(f"cell_axis {fmt.cell_axis!r} is not one of its options")
        reserved = set(names) & RESERVED_OPTIONS
        if reserved:
            problems.append(f"options {sorted(reserved)} clash with quantize()'s own arguments")
        if not fmt.table_types:
            problems.append("declares no table_types")
        import inspect

        if "device" not in inspect.signature(fmt.quantize).parameters:
            problems.append("quantize() takes no device= argument")
    if problems:
        raise FormatContractError(f"format {getattr(fmt, 'name', cls.__name__)!r}: " + "; ".join(problems))


# quantize()'s own keyword arguments and the quantize command's common flags
RESERVED_OPTIONS = frozenset(
    {
        "model",
        "fmt",
        "format",
        "out",
        "out_dir",
        "out_root",
        "overwrite",
        "validate",
        "eval_options",
        "gate_overrides",
        "revision",
        "progress",
        "provenance",
        "device",
        "text",
        "ctx",
        "max_tokens",
        "gate",
        "json_out",
    }
)


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
