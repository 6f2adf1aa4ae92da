"""Build files: which models, formats and types to make, how to validate and where to publish.

A build file is TOML::

    [build]
    name = "micro-demo"
    models = ["Qwen3-Micro", "Qwen3-Micro-MoE"]
    out = "qwen3-quant-out"          # relative to the current directory
    jobs = 2                          # cells run at once (also bounded by memory)
    device = "auto"                   # auto, cpu, cuda, cuda:N (a [[format]] may set its own)

    [calib]
    mix = "default"
    samples = 32

    [eval]
    text = "builtin:pydoc"
    ctx = 256
    max_tokens = 4096

    [gates]                           # overrides of the defaults by bits
    ppl = 20

    [[format]]
    name = "gguf"
    types = ["Q8_0", "Q4_K_M"]       # one cell per type

    [[format]]
    name = "gptq"
    bits = [4, 8]                     # one cell per value of a list option

    [publish]
    to = "qwen3-quant-out/published"  # or hf://ORG (repo names come from the artifacts)

    [runners.ubuntu-latest]           # CI runners cells are routed to (see build/resources.py)
    ram = "16GB"
    disk = "14GB"

Each cell is one (model, format, variant): ``Qwen3-Micro/gguf/Q4_K_M``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MissingFileError, UsageError
from ..formats import FORMATS, get_format
from .resources import DEFAULT_RUNNERS, Runner, parse_runners

DEFAULT_BUILD = Path(__file__).resolve().parent.parent / "assets" / "build" / "default.toml"


@dataclass(frozen=True)
class Cell:
    """One (model, format, value of the format's cell axis): ``Qwen3-8B/gptq/4``. The axis value
    is what the build file lists (``4``), not the artifact's variant name (``W4g128``)."""

    model: str
    format: str
    axis_value: str  # Q4_K_M, 4, int4
    options: tuple[tuple[str, Any], ...]  # options for quantize() (axis value included)
    device: str = "auto"  # where it computes; not an input of the artifact (not in options)

    @property
    def id(self) -> str:
        return f"{self.model}/{self.format}/{self.axis_value}"

    def option_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.options}


@dataclass
class BuildSpec:
    name: str
    models: list[str]
    formats: list[dict[str, Any]]
    out: Path
    jobs: int = 1
    device: str = "auto"
    device_override: str | None = None  # --device on the command line: every cell
    calib: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, float | None] = field(default_factory=dict)
    publish: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    runners: tuple[Runner, ...] = DEFAULT_RUNNERS

    @property
    def is_default(self) -> bool:
        """The bundled demo build (no build file given)."""
        return Path(self.source) == DEFAULT_BUILD

    @property
    def artifacts_dir(self) -> Path:
        return self.out / "artifacts"

    @property
    def state_dir(self) -> Path:
        return self.out / "build"

    def cells(self) -> list[Cell]:
        out: list[Cell] = []
        for model in self.models:
            for f in self.formats:
                fmt = f["name"]
                axis = get_format(fmt).cell_axis
                values = f.get(axis)
                values = values if isinstance(values, list) else [values]
                rest = {k: v for k, v in f.items() if k not in ("name", "device", axis)}
                device = self.device_override or str(f.get("device") or self.device)
                for v in values:
                    opts = dict(rest)
                    if v is not None:
                        opts[axis] = v
                    self._add_calibration(fmt, opts)
                    frozen = tuple(
                        sorted((k, tuple(x) if isinstance(x, list) else x) for k, x in opts.items())
                    )
                    label = str(v) if v is not None else "default"
                    out.append(Cell(model, fmt, label, frozen, device))
        return out

    def _add_calibration(self, fmt: str, opts: dict[str, Any]) -> None:
        """The build's ``[calib]`` goes to the cells that calibrate (not to GGUF Q8_0, ONNX, RTN)."""
        f = get_format(fmt)
        if not f.calibrates(f.parse_options({k: v for k, v in opts.items() if v is not None})):
            return
        opts.setdefault("calib", self.calib.get("mix") or "default")  # named: it enters the inputs hash
        if self.calib.get("samples"):
            opts.setdefault("calib_samples", self.calib["samples"])


def load_build(
    path: str | Path | None = None, *, out: str | Path | None = None, device: str | None = None
) -> BuildSpec:
    p = Path(path) if path else DEFAULT_BUILD
    if not p.is_file():
        raise MissingFileError(f"build file not found: {p}", hint="pass a build.toml (see examples/)")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: not valid TOML ({exc})", hint="fix the build file") from exc
    return parse_build(data, source=str(p), out=out, device=device)


def parse_build(
    data: dict[str, Any], *, source: str = "", out: str | Path | None = None, device: str | None = None
) -> BuildSpec:
    where = source or "build file"
    for key in ("build", "calib", "eval", "gates", "publish", "runners"):
        if key in data and not isinstance(data[key], dict):
            raise UsageError(f"{where}: [{key}] is not a table", hint=f"write it as [{key}] with keys below")
    b = data.get("build") or {}
    models = b.get("models") or []
    formats = data.get("format") or []
    if not models:
        raise UsageError(f"{where}: [build] models is empty", hint='list models, e.g. models = ["Qwen3-8B"]')
    if not isinstance(models, list) or not all(isinstance(m, str) and m.strip() for m in models):
        raise UsageError(f"{where}: [build] models is not a list of names", hint='e.g. models = ["Qwen3-8B"]')
    if not formats:
        raise UsageError(f"{where}: no [[format]] tables", hint='add e.g. [[format]] name = "gguf"')
    if not isinstance(formats, list) or not all(isinstance(f, dict) for f in formats):
        raise UsageError(
            f"{where}: format is not a list of [[format]] tables", hint='write [[format]] name = "gguf"'
        )
    for key in ("name", "out"):
        if key in b and not isinstance(b[key], str):
            raise UsageError(f"{where}: [build] {key} is not a string", hint=f'write {key} = "..."')
    if "to" in (data.get("publish") or {}) and not isinstance(data["publish"]["to"], str):
        raise UsageError(f"{where}: [publish] to is not a string", hint='write to = "hf://ORG" or a folder')
    for f in formats:
        name = str(f.get("name", "")).lower()
        if name not in FORMATS:
            raise UsageError(
                f"{where}: unknown format '{f.get('name')}'", hint="one of: " + ", ".join(FORMATS)
            )
        f["name"] = name
    from ..device import parse_device

    for what, spelling in [("--device", device), ("[build] device", b.get("device"))] + [
        (f"[[format]] {f['name']} device", f.get("device")) for f in formats
    ]:
        if spelling is not None:
            try:
                parse_device(str(spelling))
            except UsageError as exc:
                raise UsageError(f"{where}: {what}: {exc.message}", hint=exc.hint) from None
    from ..eval.gates import parse_gate_overrides

    gates = parse_gate_overrides([f"{k}={v}" for k, v in (data.get("gates") or {}).items()])
    jobs = b.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"{where}: jobs must be at least 1", hint="set [build] jobs = 1 or more")
    return BuildSpec(
        name=b.get("name", Path(source).stem or "build"),
        models=list(models),
        formats=formats,
        out=Path(out or b.get("out", "qwen3-quant-out")),
        jobs=jobs,
        device=str(b.get("device") or "auto"),
        device_override=device,
        calib=dict(data.get("calib") or {}),
        eval=dict(data.get("eval") or {}),
        gates=gates,
        publish=dict(data.get("publish") or {}),
        source=source,
        runners=parse_runners(data.get("runners"), where=where),
    )


def select(cells: list[Cell], ids: list[str] | None) -> list[Cell]:
    if not ids:
        return cells
    by_id = {c.id: c for c in cells}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise UsageError(
            f"no cell {missing[0]} in this build", hint="see the cell ids with `qwen3-quant build --plan`"
        )
    return [by_id[i] for i in ids]


def cells_by_group(cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
    """Cells that write into the same artifact folder (same model and format) run one after another."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.format), []).append(c)
    return groups
