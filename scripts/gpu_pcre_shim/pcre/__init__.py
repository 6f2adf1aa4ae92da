"""Stand-in for pypcre, used by scripts/gpu_check.sh ONLY when pypcre's C extension cannot be built
on the GPU test machine (no network there to fetch PCRE2): the part of its API that GPTQModel uses
(compile, escape, split, Pattern, Flag), on the standard library's ``re``. Never installed."""

import re
from re import Pattern, compile, escape, split

__all__ = ["Flag", "Pattern", "compile", "escape", "split"]


class Flag:
    CASELESS = re.IGNORECASE
    MULTILINE = re.MULTILINE
    DOTALL = re.DOTALL
