"""What a calibration mix is: named sources with shares, a sample count, a sequence length and a
seed; read from a TOML file (the named mixes ship in the package) or made from a user's text or
JSON-lines file."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CalibrationError, UsageError

if TYPE_CHECKING:
    from .sampling import CalibSet

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MIX_DIR = ASSETS / "mixes"  # a link to the project's calib/ folder; a copy of it in a wheel
PACKAGED_DATA = ASSETS / "calib"
KINDS = ("text", "jsonl", "jsonl-chat", "hf-dataset", "generate")
DEFAULT_SAMPLES, DEFAULT_SEQ_LEN = 128, 512
USER_FILE_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    share: float
    path: str = ""  # file or glob; prefixes packaged: (in the package), shared: (test data folder)
    license: str = ""  # recorded in every recipe that uses the source
    gutenberg: bool = False
    thinking: bool | None = None
    inline_reasoning: bool = False  # thinking off: keep an answer's reasoning, outside <think>
    fields: dict[str, str] = field(default_factory=dict)
    system: str = ""
    dataset: str = ""  # hf-dataset
    config: str = ""
    split: str = "train"
    max_rows: int = 2000  # hf-dataset: rows read (streamed) from the start of the split
    rows: int = 32  # generate: conversations the model writes
    max_new_tokens: int = 256  # generate
    max_seconds: float = 600.0  # generate: stop writing after this long (what was written is kept)

    def describe(self) -> str:
        return self.path or self.dataset


@dataclass(frozen=True)
class CalibMix:
    name: str
    description: str
    samples: int
    seq_len: int
    seed: int
    sources: tuple[Source, ...]
    origin: str = ""

    def build(
        self,
        model_dir: str | Path,
        *,
        samples: int | None = None,
        seq_len: int | None = None,
        cache_dir: Path | None = None,
    ) -> CalibSet:
        """Render and tokenise the mix with the tokenizer (and chat template) in ``model_dir``; a
        ``generate`` source also runs the model there (its output kept under ``cache_dir``)."""
        from transformers import AutoTokenizer

        from .sampling import build_calibration

        tok = AutoTokenizer.from_pretrained(model_dir)
        tok.model_max_length = 1 << 30  # samples are truncated to seq_len here, not by the tokenizer
        return build_calibration(
            self,
            tok,
            samples=samples or self.samples,
            seq_len=seq_len or self.seq_len,
            model_dir=Path(model_dir),
            cache_dir=cache_dir,
        )

    def record(self) -> dict[str, Any]:
        return {
            "mix": self.name,
            "origin": self.origin,
            "description": self.description,
            "seed": self.seed,
            "sources": [
                {k: v for k, v in asdict(s).items() if v not in ("", None, {})} for s in self.sources
            ],
        }


def list_mixes() -> dict[str, Path]:
    return {f.stem: f for f in sorted(MIX_DIR.glob("*.toml"))}


def is_user_file(spec: str | Path) -> bool:
    return str(spec).endswith(USER_FILE_SUFFIXES)


def load_mix(name_or_path: str | Path | None = None) -> CalibMix:
    """A named mix, a ``.toml`` mix file, or a user's ``.txt`` / ``.jsonl`` file (checked here,
    before any heavy work)."""
    spec = str(name_or_path or "default")
    p = Path(spec).expanduser()
    if is_user_file(spec):
        from .userfile import user_file_mix

        return user_file_mix(p)
    if not (p.suffix == ".toml" and p.is_file()):
        mixes = list_mixes()
        if spec not in mixes:
            raise UsageError(
                f"unknown calibration mix '{spec}'",
                hint="use one of " + ", ".join(mixes) + ", a .toml mix, or a .txt / .jsonl file",
            )
        p = mixes[spec]
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{p}: not valid TOML ({exc})", hint="fix the mix file") from exc
    return parse_mix(data, origin=str(p))


_SOURCE_KEYS = {f for f in Source.__dataclass_fields__}


def parse_mix(data: dict[str, Any], origin: str = "") -> CalibMix:
    where = origin or "calibration mix"
    try:
        sources = []
        for s in data["source"]:
            if s["kind"] not in KINDS:
                raise CalibrationError(
                    f"{where}: source {s.get('name')} has unknown kind {s['kind']}",
                    hint="kinds: " + ", ".join(KINDS),
                )
            unknown = set(s) - _SOURCE_KEYS
            if unknown:
                raise CalibrationError(
                    f"{where}: source {s['name']} has unknown key(s) {', '.join(sorted(unknown))}",
                    hint="see calib/default.toml and docs/calibration.md for the keys a source takes",
                )
            sources.append(Source(**{**s, "share": float(s["share"]), "fields": dict(s.get("fields", {}))}))
        mix = CalibMix(
            name=data["name"],
            description=data.get("description", ""),
            samples=int(data["samples"]),
            seq_len=int(data["seq_len"]),
            seed=int(data.get("seed", 0)),
            sources=tuple(sources),
            origin=origin,
        )
    except KeyError as exc:
        raise CalibrationError(
            f"{where} lacks {exc}", hint="see calib/default.toml for the fields a mix needs"
        ) from exc
    if mix.samples < 1 or mix.seq_len < 8 or not sources or any(s.share <= 0 for s in sources):
        raise CalibrationError(
            f"{where}: samples, seq_len and every share must be positive", hint="fix the mix file"
        )
    return mix
