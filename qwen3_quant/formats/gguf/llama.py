"""Access to llama.cpp through llama-cpp-python's ctypes bindings: one-time backend set-up and the
library's log routed to Python logging (and captured while a call runs, so that a failure can say why).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger("qwen3_quant.llama_cpp")

_state: dict = {}
_lock = threading.Lock()
_partial: list[str] = []
_captures: list[list[str]] = []


def _on_log(level: int, text: bytes, _user) -> None:
    msg = text.decode("utf-8", errors="replace") if text else ""
    _partial.append(msg)
    if not msg.endswith("\n"):
        return
    line = "".join(_partial).rstrip("\n")
    _partial.clear()
    for c in _captures:
        c.append(line)
    log.debug("%s", line)


def lib():
    """The ``llama_cpp`` module with the backend initialised and its log routed here."""
    with _lock:
        if "lib" not in _state:
            from ...errors import require

            llama_cpp = require("llama_cpp", "gguf")
            llama_cpp.llama_backend_init()
            cb = llama_cpp.llama_log_callback(_on_log)
            llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
            _state["cb"] = cb  # keep the callback alive as long as the library may call it
            _state["lib"] = llama_cpp
        return _state["lib"]


@contextlib.contextmanager
def captured_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines written inside the block."""
    lines: list[str] = []
    _captures.append(lines)
    try:
        yield lines
    finally:
        _captures.remove(lines)


def last_error(lines: list[str]) -> str:
    """The most telling line of a failed call's log: the last error line, else the last line that
    says something failed, else the last line."""
    for keys in (("error",), ("failed", "exception", "invalid", "corrupt", "not within", "unable")):
        for line in reversed(lines):
            if any(k in line.lower() for k in keys):
                return line.strip()
    return lines[-1].strip() if lines else "no message from llama.cpp"


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def cpu_has_amx() -> bool:
    """Whether llama.cpp's CPU backend would put weights in AMX buffers here."""
    return "AMX_INT8 = 1" in lib().llama_print_system_info().decode(errors="replace")
