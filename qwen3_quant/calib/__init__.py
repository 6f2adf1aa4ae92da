"""Calibration mixes: named, deterministic samples of text and chat for GPTQ, AWQ and GGUF imatrix.

A mix is a TOML file listing sources with shares, a sample count, a sequence length and a seed.
The named mixes are edited in the project's ``calib/`` folder and ship in the package
(``qwen3_quant/assets/mixes``); ``default`` reads only the calibration set packaged in
``qwen3_quant/assets/calib`` (built by ``scripts/build_calib_data.py``) and works offline anywhere.
A user's ``.txt`` or ``.jsonl`` file is a mix of its own (``--calib FILE``). Source kinds:

- ``text``: UTF-8 files (globs, ``.gz`` too; ``packaged:`` = the packaged set, ``shared:`` = the
  test-data folder, ``builtin:pydoc`` = Python's own topic help); random passages.
- ``jsonl``: JSON-lines rows of plain text (``fields = {text = "text"}``) or joined fields.
- ``jsonl-chat``: rows rendered as conversations through the model's own chat template, thinking
  on (reasoning inside ``<think>``) or off: ``messages`` rows (roles, content, optional
  ``reasoning_content`` and ``tool_calls``, ``tool`` turns, a ``tools`` list) or question/answer
  rows (``fields = {user = "{question}", assistant = "{answer}"}``).
- ``hf-dataset``: the first ``max_rows`` rows of a Hub dataset, streamed with ``datasets``, read
  like ``jsonl-chat`` (or ``jsonl`` with ``fields = {text = ...}``) rows.
- ``generate``: the unquantised model answers prompts taken from a file (see ``generate.py``).

Row sources are packed: rows are drawn at random and joined up to the sequence length. Sampling
depends only on the mix, its data and the tokenizer; ``CalibSet.sha256`` identifies the tokens.
Every source must be readable: one that is not raises ``CalibrationError`` naming it and the fix.
"""

from .mix import KINDS, CalibMix, Source, is_user_file, list_mixes, load_mix, parse_mix
from .sampling import CalibSet, allocate, build_calibration

__all__ = [
    "KINDS",
    "CalibMix",
    "CalibSet",
    "Source",
    "allocate",
    "build_calibration",
    "is_user_file",
    "list_mixes",
    "load_mix",
    "parse_mix",
]
