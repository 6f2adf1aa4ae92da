"""Making GPTQModel usable on a small CPU machine and keeping its chatter out of our output."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger(__name__)

# imported by transformers' GPTQ / AWQ integrations; both come with the `gptq` extra
LIBRARIES = {"gptq": ("gptqmodel", "optimum", "defuser"), "awq": ("gptqmodel", "defuser")}
# libraries that talk at import time on a CPU machine (torchao's missing CUDA kernels, banners)
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "gptqmodel", "defuser", "tokenicer", "logbar")


def libraries_present(fmt: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in LIBRARIES.get(fmt, LIBRARIES["gptq"]))


def prepare_env() -> None:
    """GPTQModel sizes a CPU worker pool at half the cores and its model loader asks for two
    workers: on a machine with fewer than four cores that fails unless the pool is sized."""
    if "GPTQMODEL_CPU_WORKERS" not in os.environ and (os.cpu_count() or 1) < 4:
        os.environ["GPTQMODEL_CPU_WORKERS"] = "2"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Capture what GPTQModel, torchao and defuser print (banner, "Failed to load ..." lines, progress
    bars) and pass it to this module's debug log instead of the terminal."""
    levels = {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
    for n in NOISY_LOGGERS:
        logging.getLogger(n).setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)
        text = buf.getvalue().strip()
        if text:
            log.debug("library output:\n%s", text)


def import_gptqmodel():
    """Import GPTQModel quietly (it prints a banner at import time)."""
    prepare_env()
    if "gptqmodel" in sys.modules:
        return sys.modules["gptqmodel"]
    from ...errors import require

    with quiet():
        return require("gptqmodel", "gptq")
