"""What each build cell needs (memory, disk, GPU, time) and which runner can take it.

A build file names its CI runners in a ``[runners]`` table, one label each::

    [runners.ubuntu-latest]          # GitHub's standard Linux runner
    ram = "16GB"
    disk = "14GB"                    # free disk for the job
    hours = 6                        # the longest a job may run there

    [runners.linux-x64-gpu-80gb]     # a larger runner the organisation set up
    ram = "256GB"
    disk = "1TB"
    gpu = "80GB"                     # GPU memory ("0" or absent: no GPU)
    hours = 72

Without the table the build has one runner, GitHub's ``ubuntu-latest`` as above. Each cell goes to
the smallest runner that fits it (:func:`route`); a cell that fits none is shown by ``--plan`` and
refused by ``--emit github-matrix`` before any job starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

GB = 1000**3
_UNITS = {"": GB, "B": 1, "KB": 1000, "MB": 1000**2, "GB": GB, "TB": 1000**4, "PB": 1000**5}
_UNITS.update({"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4})
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Runner:
    label: str  # the runs-on label
    ram_bytes: int
    disk_bytes: int
    gpu_bytes: int = 0
    max_hours: float = 6.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "ram_gb": round(self.ram_bytes / GB, 1),
            "disk_gb": round(self.disk_bytes / GB, 1),
            "gpu_gb": round(self.gpu_bytes / GB, 1),
            "max_hours": self.max_hours,
        }


DEFAULT_RUNNERS = (Runner("ubuntu-latest", 16 * GB, 14 * GB, 0, 6.0),)


@dataclass(frozen=True)
class CellNeeds:
    """One cell's estimated needs on the machine that runs it."""

    ram_bytes: int  # peak memory while quantising
    disk_bytes: int  # the source download, scratch copies and the artifact
    gpu_bytes: int  # GPU memory (0: a CPU is enough)
    hours: float  # estimated time on a CPU runner

    def to_dict(self) -> dict[str, Any]:
        return {
            "ram_gb": round(self.ram_bytes / GB, 1),
            "disk_gb": round(self.disk_bytes / GB, 1),
            "gpu_gb": round(self.gpu_bytes / GB, 1),
            "hours": round(self.hours, 2),
        }

    def describe(self) -> str:
        gpu = f", a GPU with {self.gpu_bytes / GB:.0f} GB" if self.gpu_bytes else ""
        time = f"{self.hours:.1f} h" if self.hours >= 1 else f"{self.hours * 60:.0f} min"
        return f"{self.ram_bytes / GB:.0f} GB RAM, {self.disk_bytes / GB:.0f} GB disk{gpu}, about {time}"


def parse_size(v: Any, *, where: str, field: str) -> int:
    """``"16GB"``, ``"2TB"``, ``"512GiB"`` or a number of GB, as bytes."""
    if isinstance(v, bool):
        raise UsageError(f"{where}: {field} is {v!r}, not a size", hint='write e.g. "16GB"')
    if isinstance(v, int | float):
        if v < 0:
            raise UsageError(f"{where}: {field} is {v}, not a size", hint='write e.g. "16GB"')
        return int(v * GB)
    m = _SIZE.fullmatch(v) if isinstance(v, str) else None
    if not m or m.group(2).upper() not in _UNITS:
        raise UsageError(f"{where}: {field} is {v!r}, not a size", hint='write e.g. "16GB" or "2TB"')
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_runners(table: Any, *, where: str) -> tuple[Runner, ...]:
    """The build file's ``[runners]`` table (default: GitHub's ``ubuntu-latest``)."""
    if table is None:
        return DEFAULT_RUNNERS
    if not isinstance(table, dict) or not table:
        raise UsageError(
            f"{where}: [runners] must be tables of runner labels",
            hint='write e.g. [runners.ubuntu-latest] ram = "16GB" disk = "14GB"',
        )
    out = []
    for label, t in table.items():
        if not _LABEL.fullmatch(label):
            raise UsageError(
                f"{where}: runner label {label!r} is not a runs-on label",
                hint="letters, digits, '.', '_' and '-' only",
            )
        if not isinstance(t, dict):
            raise UsageError(
                f"{where}: [runners.{label}] is not a table", hint='give ram = "..." and disk = "..."'
            )
        unknown = set(t) - {"ram", "disk", "gpu", "hours"}
        if unknown:
            raise UsageError(
                f"{where}: [runners.{label}] has unknown key {sorted(unknown)[0]!r}",
                hint="a runner has ram, disk, gpu and hours",
            )
        for key in ("ram", "disk"):
            if key not in t:
                raise UsageError(f"{where}: [runners.{label}] has no {key}", hint=f'add {key} = "16GB"')
        hours = t.get("hours", 6)
        if isinstance(hours, bool) or not isinstance(hours, int | float) or hours <= 0:
            raise UsageError(
                f"{where}: [runners.{label}] hours is {hours!r}", hint="give the job time limit in hours"
            )
        out.append(
            Runner(
                label,
                parse_size(t["ram"], where=where, field=f"[runners.{label}] ram"),
                parse_size(t["disk"], where=where, field=f"[runners.{label}] disk"),
                parse_size(t.get("gpu", 0), where=where, field=f"[runners.{label}] gpu"),
                float(hours),
            )
        )
    return tuple(out)


def cell_needs(
    fmt, arch, peak_bytes: int, artifact_bytes: int, seconds: float, *, downloads: bool = True
) -> CellNeeds:
    """A cell's needs from its format's estimate: the bf16 source checkpoint is downloaded (unless
    the model is a local folder), the format may keep scratch copies of it, and the artifact is
    written (with the scratch copies of it the format keeps meanwhile); 10% margin on disk."""
    from ..catalog.architecture import param_counts

    source = 2 * param_counts(arch).total
    scratch = source * (int(downloads) + fmt.scratch_source_copies)
    disk = int(1.1 * (scratch + artifact_bytes * (1 + fmt.scratch_artifact_copies)))
    gpu = peak_bytes if fmt.needs_gpu else 0
    return CellNeeds(int(peak_bytes), disk, gpu, seconds / 3600)


def fits(needs: CellNeeds, runner: Runner) -> bool:
    return (
        needs.ram_bytes <= runner.ram_bytes
        and needs.disk_bytes <= runner.disk_bytes
        and needs.gpu_bytes <= runner.gpu_bytes
        and needs.hours <= runner.max_hours
    )


def route(needs: CellNeeds | None, runners: tuple[Runner, ...]) -> Runner | None:
    """The smallest runner (by GPU, memory, disk) that fits ``needs``; the first runner when the
    needs are unknown (a Hub model not in the catalog); ``None`` when none fits."""
    if needs is None:
        return runners[0] if runners else None
    ok = [r for r in runners if fits(needs, r)]
    return min(ok, key=lambda r: (r.gpu_bytes, r.ram_bytes, r.disk_bytes)) if ok else None
