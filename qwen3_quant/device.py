"""Where quantisation and validation compute: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

:func:`parse_device` checks the spelling (no torch needed); :func:`resolve_device` turns a choice
into a :class:`Device` from what torch reports (a :class:`CudaReport`, injected by tests and
produced by :func:`probe_cuda` otherwise). ``auto`` is CUDA device 0 when torch sees a GPU, else
the CPU. Asking for CUDA where there is none (no GPU, or a torch built without CUDA) raises a
:class:`~qwen3_quant.errors.DeviceError` whose one line says which, before anything loads.

:func:`device_facts` describes the device for manifests and cards: GPU name, driver and CUDA
versions, free and total memory.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import DeviceError, UsageError

CHOICES = ("auto", "cpu", "cuda", "cuda:N")
DEFAULT_DEVICE = "auto"
_SPELLING = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")
CUDA_TORCH_HINT = (
    "install a CUDA build of torch (pip install torch --index-url https://download.pytorch.org/whl/cu128), "
    "or use --device cpu"
)


@dataclass(frozen=True)
class CudaReport:
    """What torch says about CUDA on this machine."""

    torch_version: str
    cuda_build: str | None  # torch.version.cuda: None for a CPU-only torch
    device_count: int = 0
    names: tuple[str, ...] = ()  # per visible device
    free_bytes: tuple[int, ...] = ()  # per visible device, when it was asked
    total_bytes: tuple[int, ...] = ()
    driver: str | None = None  # the NVIDIA driver version, when nvidia-smi / NVML answers


@dataclass(frozen=True)
class Device:
    """A resolved device: ``cpu`` or ``cuda`` with its index among the visible GPUs."""

    kind: str  # cpu | cuda
    index: int | None = None
    requested: str = DEFAULT_DEVICE
    facts: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def torch(self) -> str:
        """The torch device string: ``cpu``, ``cuda:0``."""
        return f"cuda:{self.index or 0}" if self.is_cuda else "cpu"

    def __str__(self) -> str:
        return self.torch

    def describe(self) -> str:
        """``NVIDIA H100 80GB HBM3 (cuda:0, driver 550.54, CUDA 12.8)`` or ``x86_64 CPU, 16 threads``."""
        return describe_facts(self.facts) if self.facts else self.torch


CPU = Device("cpu", requested="cpu")


def parse_device(spec: str | None) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``None`` is ``auto``. A bad spelling is a UsageError."""
    text = (spec or DEFAULT_DEVICE).strip().lower()
    m = _SPELLING.match(text)
    if not m or (m[2] is not None and m[1] != "cuda"):
        raise UsageError(f"unknown device '{spec}'", hint="use auto, cpu, cuda or cuda:N (e.g. cuda:1)")
    return m[1], int(m[2]) if m[2] is not None else None


def resolve_device(spec: str | None, report: CudaReport | None = None) -> Device:
    """The device to compute on. ``report`` is what torch says (:func:`probe_cuda` when not given;
    a ``cpu`` choice never asks torch)."""
    kind, index = parse_device(spec)
    requested = (spec or DEFAULT_DEVICE).strip().lower()
    if kind == "cpu":
        return Device("cpu", requested=requested, facts=cpu_facts())
    report = report if report is not None else probe_cuda()
    if kind == "auto":
        if report.cuda_build is None or report.device_count == 0:
            return Device("cpu", requested=requested, facts=cpu_facts())
        return Device("cuda", 0, requested, facts=cuda_facts(report, 0))
    if report.cuda_build is None:
        raise DeviceError(
            f"--device {requested}: this torch ({report.torch_version}) was built without CUDA",
            hint=CUDA_TORCH_HINT,
        )
    if report.device_count == 0:
        raise DeviceError(
            f"--device {requested}: torch (CUDA {report.cuda_build}) sees no GPU" + _visible_note(),
            hint="check nvidia-smi and the NVIDIA driver, or use --device cpu",
        )
    index = index or 0
    if index >= report.device_count:
        raise DeviceError(
            f"--device {requested}: torch sees {report.device_count} GPU(s) (cuda:0"
            + (f" to cuda:{report.device_count - 1}" if report.device_count > 1 else "")
            + ")",
            hint=f"use --device cuda:{report.device_count - 1} or lower",
        )
    return Device("cuda", index, requested, facts=cuda_facts(report, index))


def _visible_note() -> str:
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f" (CUDA_VISIBLE_DEVICES={vis!r})" if vis is not None else ""


def probe_cuda(with_memory: bool = True) -> CudaReport:
    """Ask torch (imported here) what CUDA it has and sees."""
    import torch

    cuda_build = torch.version.cuda
    count = 0
    names: list[str] = []
    free: list[int] = []
    total: list[int] = []
    if cuda_build is not None and torch.cuda.is_available():
        count = torch.cuda.device_count()
        for i in range(count):
            names.append(torch.cuda.get_device_name(i))
            if with_memory:
                f, t = torch.cuda.mem_get_info(i)
                free.append(int(f))
                total.append(int(t))
    return CudaReport(
        torch_version=torch.__version__,
        cuda_build=cuda_build,
        device_count=count,
        names=tuple(names),
        free_bytes=tuple(free),
        total_bytes=tuple(total),
        driver=nvidia_driver_version() if count else None,
    )


def nvidia_driver_version(run: Callable[..., Any] = subprocess.run) -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (``None`` when it is not there)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    first = (out.stdout or "").strip().splitlines()
    return first[0].strip() if first else None


def cpu_facts() -> dict[str, Any]:
    return {"device": "cpu", "name": f"{platform.machine()} CPU", "threads": os.cpu_count()}


def cuda_facts(report: CudaReport, index: int) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "device": f"cuda:{index}",
        "name": report.names[index] if index < len(report.names) else "CUDA GPU",
        "cuda": report.cuda_build,
        "driver": report.driver,
        "torch": report.torch_version,
    }
    if index < len(report.free_bytes):
        facts["free_vram_bytes"] = report.free_bytes[index]
        facts["total_vram_bytes"] = report.total_bytes[index]
    return {k: v for k, v in facts.items() if v is not None}


def describe_facts(facts: dict[str, Any]) -> str:
    """How cards and tables name a device from its recorded facts."""
    if facts.get("device", "cpu") == "cpu":
        threads = facts.get("threads")
        return f"{facts.get('name', 'CPU')}" + (f", {threads} threads" if threads else "")
    parts = [str(facts["device"])]
    if facts.get("driver"):
        parts.append(f"driver {facts['driver']}")
    if facts.get("cuda"):
        parts.append(f"CUDA {facts['cuda']}")
    if facts.get("total_vram_bytes"):
        parts.append(f"{facts['total_vram_bytes'] / 1024**3:.0f} GiB")
    return f"{facts.get('name', 'CUDA GPU')} ({', '.join(parts)})"


def refresh_memory(device: Device) -> Device:
    """The same device with its free-memory facts measured now (before a job sizes itself)."""
    if not device.is_cuda:
        return device
    import torch

    free, total = torch.cuda.mem_get_info(device.index or 0)
    return Device(
        device.kind,
        device.index,
        device.requested,
        facts={**device.facts, "free_vram_bytes": int(free), "total_vram_bytes": int(total)},
    )


def visible_devices(device, current: str | None) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a worker on ``device``: nothing for the CPU (a library in the
    worker would otherwise pick a GPU it sees), else the one GPU chosen, counted among those
    already visible."""
    if device is None or not device.is_cuda:
        return ""
    index = device.index or 0
    if current is None or not current.strip():
        return str(index)
    visible = [d.strip() for d in current.split(",") if d.strip()]
    return visible[index] if index < len(visible) else str(index)
