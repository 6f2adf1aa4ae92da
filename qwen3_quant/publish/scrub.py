"""Removing anything secret-looking from text that leaves the machine (cards, errors, logs).

Commands recorded in manifests should never hold a secret, but a card is public: scrub them anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Hugging Face tokens (user, org, OAuth) and other common API key shapes
    (re.compile(r"\b(hf|api_org|hf_oauth)_[A-Za-z0-9]{16,}\b"), MASK),
    (re.compile(r"\b(sk|ghp|gho|ghs|github_pat|glpat|xox[abpr])[-_][A-Za-z0-9_-]{16,}\b"), MASK),
    # Authorization headers
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # credentials in URLs
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{MASK}@"),
    # secret-named options: --token X, --token=X, --hf-token X, --api-key X, --password X
    (
        re.compile(
            r"(?i)(--?[a-z0-9_-]*(?:token(?!s|izer)|api[-_]?key|secret|password|passwd)[a-z0-9_-]*)(=|\s+)(\S+)"
        ),
        rf"\1\2{MASK}",
    ),
    # secret-named environment assignments: HF_TOKEN=..., AWS_SECRET_ACCESS_KEY=...
    (
        re.compile(
            r"(?i)\b([A-Z0-9_]*(?:TOKEN(?!S|IZER)|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)[A-Z0-9_]*)=(\S+)"
        ),
        rf"\1={MASK}",
    ),
)


def scrub(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """``text`` with known ``secrets`` and token-like strings replaced by ``***``."""
    if text is None:
        return None
    out = str(text)
    for s in secrets:
        if s and len(s) >= 4:
            out = out.replace(s, MASK)
    for pattern, repl in _PATTERNS:
        out = pattern.sub(repl, out)
    return out


def shorten_home(text: str) -> str:
    """Replace the user's home folder by ``~`` (user names in paths are nobody's business)."""
    home = str(Path.home())
    return text.replace(home + "/", "~/") if home not in ("/", "") else text


def public_text(text: str) -> str:
    """What a card or published manifest may show of ``text``: secrets masked, home folder as ``~``."""
    return shorten_home(scrub(text))
