"""Typed exceptions. Library code raises these; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class Qwen3QuantError(Exception):
    """Base class. ``str(err)`` is one line naming the problem; ``hint`` names the fix."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def __str__(self) -> str:
        return self.one_line()


class UsageError(Qwen3QuantError):
    """A bad option or combination of options."""

    exit_code = 2


class UnknownModelError(UsageError):
    pass


class UnknownFormatError(UsageError):
    pass


class DeviceError(UsageError):
    """A device that is not there (``--device cuda`` without a GPU or a CUDA torch), or a job that
    does not fit in the chosen GPU's memory."""


class MissingFileError(Qwen3QuantError):
    pass


class CalibrationError(UsageError):
    """Calibration data that cannot be used: an unreadable, empty or malformed file or source, or
    a Hub dataset that cannot be reached."""


class CheckpointError(Qwen3QuantError):
    """A model folder that is not a usable Qwen3 / Qwen3-MoE checkpoint."""


class DependencyMissingError(Qwen3QuantError):
    """An optional dependency (an extra) is not installed."""


class DiskFullError(Qwen3QuantError):
    pass


class NotWritableError(Qwen3QuantError):
    """An output folder that cannot be written: read-only mount, a path under a file, no permission."""


class ArtifactExistsError(Qwen3QuantError):
    pass


class DownloadError(Qwen3QuantError):
    pass


class RuntimeLoadError(Qwen3QuantError):
    """An artifact failed to load in its runtime."""


class ValidationFailedError(Qwen3QuantError):
    """An artifact failed a validation gate."""

    exit_code = 3


class PublishError(Qwen3QuantError):
    pass


class UnsafePathError(Qwen3QuantError):
    """A path read from a manifest, build file, state file or Hub response that would leave the
    folder it belongs to (``..``, an absolute path, a symlink leading out)."""


class ManifestError(Qwen3QuantError):
    """A manifest (``qwen3_quant.json``) or state file that is not shaped as qwen3-quant writes it."""


class MergeConflictError(Qwen3QuantError):
    """Two CI cells' outputs that cannot be merged into one artifact folder (the same variant or
    file with different contents, or folders made from different checkpoints)."""


class FormatContractError(Qwen3QuantError, TypeError):
    """A format that does not declare or implement part of the format contract (a programming
    error in the format, found when it registers)."""


def require(module: str, extra: str):
    """Import an optional dependency or raise a one-line error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyMissingError(
            f"{module} is not installed ({exc})", hint=f"pip install 'qwen3-quant[{extra}]'"
        ) from exc
