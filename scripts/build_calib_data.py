"""Build the calibration set that ships inside the package (``qwen3_quant/assets/calib/``).

A compact, seeded derivative of the public data sets in ``shared/data`` (see its README for where
each file comes from): passages, not whole files. The same inputs and seed give byte-identical
outputs (gzip without timestamps, sorted keys), and ``sources.json`` records every input file's
sha256, its licence and provenance, and every output's sha256.

    python scripts/build_calib_data.py [--data /work/shared/data]

Held out (for evaluation, e.g. benchmarks/calibration_bench.py): the Gutenberg book the micro
models never saw (Jekyll and Hyde), the second half of every UDHR text, the GSM8K test split and
the last 24 HumanEval tasks.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "qwen3_quant" / "assets" / "calib"
SEED = 13
HELD_OUT_BOOK = "pg43_stevenson_jekyll_and_hyde"  # the micro models' held-out book
PROSE_PER_BOOK, PROSE_CHARS = 16, 2000
UDHR_PASSAGE_CHARS = 1200
MATH_CONVERSATIONS, TOOL_CONVERSATIONS = 700, 240
HUMANEVAL_KEEP = 140  # tasks 0..139; 140..163 are held out

SOURCES = {
    "gutenberg": {
        "what": "21 public-domain English novels from Project Gutenberg (Jekyll and Hyde left out)",
        "repo": "RU-ECE/ECE451-Parallel@c58dca3a6abedd8041057571c247e9a393cc3b4d",
        "path": "data/books/*",
        "license": "public domain in the US (Project Gutenberg; headers and licence text stripped)",
    },
    "udhr": {
        "what": "Universal Declaration of Human Rights in 60 languages (UDHR in Unicode via NLTK udhr2)",
        "repo": "nltk/nltk_data@5db857e6f7df11eabb5e5665836db9ec8df07e28",
        "path": "packages/corpora/udhr2.zip",
        "license": "public domain (per packages/corpora/udhr2.xml; text from unicode.org/udhr)",
    },
    "gsm8k": {
        "what": "GSM8K grade-school math, train split",
        "repo": "openai/grade-school-math@3101c7d5072418e28b9008a6636bde82a006892c",
        "path": "grade_school_math/data/train.jsonl",
        "license": "MIT; Copyright (c) 2021 OpenAI (LICENSE of the repository at that commit)",
    },
    "humaneval": {
        "what": "HumanEval Python problems and canonical solutions",
        "repo": "openai/human-eval@6d43fb980f9fee3c892a914eda09951f772ad10d",
        "path": "data/HumanEval.jsonl.gz",
        "license": "MIT; Copyright (c) OpenAI (https://openai.com) (LICENSE of the repository at that commit)",
    },
}

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression and return the result.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. 48/2 or (3+4)*12"}},
            "required": ["expression"],
        },
    },
}
RUN_PYTHON = {
    "type": "function",
    "function": {
        "name": "run_python",
        "description": "Run a Python 3 program and return what it prints (stdout and stderr).",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "the program"}},
            "required": ["code"],
        },
    },
}
TOOL_SYSTEMS = [
    "",
    "You are a helpful assistant.",
    "You are a careful assistant. Use the tools when they help.",
]


README = """# The packaged calibration set

What the `default`, `text` and `chat` mixes (`calib/*.toml`) read: a compact, seeded derivative of
public-domain and MIT-licensed data sets, {total:,} bytes gzipped, shipped inside the package so that
calibration works offline on any machine. Built by `scripts/build_calib_data.py` (seed {seed})
from the files described in `shared/data/README.md`; running it again on the same files gives the
same bytes. `sources.json` records each input file's sha256 and each output's sha256 and row count.

| file | rows | bytes | what | from |
|---|---|---|---|---|
{rows}

Every row is a JSON object: `{{"text"}}` passages (prose, multilingual, with `source` / `lang`),
`{{"task_id", "prompt", "canonical_solution"}}` (code), or `{{"messages"[, "tools"]}}` conversations
whose assistant turns carry `reasoning_content` (rendered inside `<think>` with thinking on, or
folded into the answer with thinking off) and `tool_calls` answered by `tool` turns.

## Sources and licences

| key | what | repository @ commit | path | licence |
|---|---|---|---|---|
{srcs}

Passages, not whole files: 16 passages of about 2,000 characters from each of 21 novels (Gutenberg
headers, footers and licence text removed), the first half of each of the 60 UDHR texts cut into
passages, 700 conversations from GSM8K train problems (1-3 problems each; the `<<48/2=24>>`
calculator marks removed from the reasoning), 240 tool-call conversations (GSM8K calculator
marks as `calculator` calls with their results; HumanEval tests run through `run_python`, its
output being what running the program printed when the set was built), and HumanEval tasks 0-139.

Held out, for evaluation against calibration (`benchmarks/calibration_bench.py`): the Gutenberg
book the micro models never saw (Jekyll and Hyde), the second half of every UDHR text, the GSM8K
test split and HumanEval tasks 140-163.

## MIT licence of the GSM8K and HumanEval material

The GSM8K and HumanEval rows are used under the MIT licence. The copyright lines, as the `LICENSE`
file of each repository reads at the commit above:

- GSM8K (openai/grade-school-math): Copyright (c) 2021 OpenAI
- HumanEval (openai/human-eval): Copyright (c) OpenAI (https://openai.com)


Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def read_text(p: Path) -> str:
    with open(p, encoding="utf-8-sig", newline=None) as fh:
        return fh.read()


def strip_gutenberg(text: str) -> str:
    start = text.find("*** START OF")
    start = text.find("\n", start) + 1 if start >= 0 else 0
    end = text.find("*** END OF", start)
    return text[start : end if end >= 0 else len(text)].strip()


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs with their hard line wraps joined."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def prose_rows(data: Path, rng: random.Random) -> tuple[list[dict], list[Path]]:
    files = [f for f in sorted((data / "corpus-en" / "gutenberg").glob("*.txt")) if f.stem != HELD_OUT_BOOK]
    rows = []
    for f in files:
        paras = paragraphs(strip_gutenberg(read_text(f)))
        paras = paras[len(paras) // 50 :]  # past the title pages and the table of contents
        for start in sorted(rng.sample(range(len(paras) - 40), PROSE_PER_BOOK)):
            out, i = [], start
            while sum(len(p) for p in out) < PROSE_CHARS and i < len(paras):
                out.append(paras[i])
                i += 1
            rows.append({"source": f.stem, "text": "\n\n".join(out)})
    return rows, files


def udhr_rows(data: Path) -> tuple[list[dict], list[Path]]:
    d = data / "multilingual"
    langs = [line.split("\t") for line in read_text(d / "udhr2_languages.tsv").splitlines()[1:] if line]
    rows, files = [], []
    for fname, code, language, *_ in langs:
        f = d / "udhr2" / fname
        files.append(f)
        lines = [" ".join(line.split()) for line in read_text(f).splitlines() if line.strip()]
        text = "\n".join(lines)
        text = text[: len(text) // 2]  # the second half is held out for evaluation
        passage: list[str] = []
        for line in text.splitlines():
            passage.append(line)
            if sum(len(x) + 1 for x in passage) >= UDHR_PASSAGE_CHARS:
                rows.append({"lang": code, "language": language, "text": "\n".join(passage)})
                passage = []
        if passage:
            rows.append({"lang": code, "language": language, "text": "\n".join(passage)})
    return rows, files


CALC = re.compile(r"<<([^=<>]+)=([^<>]*)>>")


def solve(answer: str) -> tuple[str, str, list[tuple[str, str]]]:
    """GSM8K answer -> (worked reasoning without calculator marks, final answer, calculations)."""
    reasoning, final = answer.rsplit("####", 1)
    return CALC.sub("", reasoning).strip(), final.strip(), CALC.findall(reasoning)


def math_rows(rows: list[dict], rng: random.Random) -> list[dict]:
    """Conversations of one to three GSM8K problems; the worked solution is the assistant's reasoning."""
    out = []
    it = iter(rows)
    for _ in range(MATH_CONVERSATIONS):
        messages = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            r = next(it)
            reasoning, final, _ = solve(r["answer"])
            messages += [
                {"role": "user", "content": r["question"]},
                {"role": "assistant", "content": f"The answer is {final}.", "reasoning_content": reasoning},
            ]
        out.append({"messages": messages})
    return out


def math_tool_rows(rows: list[dict], rng: random.Random) -> list[dict]:
    """GSM8K solutions whose calculator annotations become ``calculator`` tool calls."""
    out = []
    for r in rows:
        reasoning, final, calcs = solve(r["answer"])
        if not calcs or len(out) >= TOOL_CONVERSATIONS // 2:
            continue
        system = rng.choice(TOOL_SYSTEMS)
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": r["question"]})
        for expr, result in calcs[:4]:
            call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": expr}}}
            messages += [
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "content": result},
            ]
        messages.append(
            {"role": "assistant", "content": f"The answer is {final}.", "reasoning_content": reasoning}
        )
        out.append({"tools": [CALCULATOR], "messages": messages})
    return out


def run_python(code: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "main.py"
        f.write_text(code)
        p = subprocess.run([sys.executable, "-I", str(f)], capture_output=True, text=True, timeout=20, cwd=d)
        return (p.stdout + p.stderr).strip() or f"(no output, exit code {p.returncode})"


def code_tool_rows(tasks: list[dict], rng: random.Random) -> list[dict]:
    """Write a HumanEval function, then run its tests through ``run_python``; the tool's answer is
    what running the program here printed."""
    out = []
    for t in rng.sample(tasks, TOOL_CONVERSATIONS // 2):
        program = (
            t["prompt"] + t["canonical_solution"] + "\n" + t["test"] + f"\ncheck({t['entry_point']})\n"
            "print('all tests passed')\n"
        )
        call = {"type": "function", "function": {"name": "run_python", "arguments": {"code": program}}}
        solution = f"```python\n{t['prompt']}{t['canonical_solution']}```"
        out.append(
            {
                "tools": [RUN_PYTHON],
                "messages": [
                    {"role": "user", "content": f"Complete this function and test it:\n\n{t['prompt']}"},
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "content": run_python(program)},
                    {"role": "assistant", "content": f"The tests pass. Here is the function:\n\n{solution}"},
                ],
            }
        )
    return out


def write_jsonl_gz(path: Path, rows: list[dict]) -> str:
    raw = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    data: Path = args.data
    OUT.mkdir(parents=True, exist_ok=True)

    rng = random.Random(SEED)
    prose, prose_files = prose_rows(data, rng)
    udhr, udhr_files = udhr_rows(data)
    gsm_file = data / "chat" / "gsm8k" / "train.jsonl"
    gsm = [json.loads(line) for line in read_text(gsm_file).splitlines() if line.strip()]
    rng.shuffle(gsm)
    he_file = data / "chat" / "humaneval" / "HumanEval.jsonl.gz"
    with gzip.open(he_file, "rt", encoding="utf-8") as fh:
        tasks = [json.loads(line) for line in fh if line.strip()][:HUMANEVAL_KEEP]
    math = math_rows(gsm[:2000], rng)
    tools = math_tool_rows(gsm[2000:], rng) + code_tool_rows(tasks, rng)
    code = [{k: t[k] for k in ("task_id", "prompt", "canonical_solution")} for t in tasks]

    outputs = {
        "prose-en.jsonl.gz": (prose, ["gutenberg"], "English prose passages (~2,000 characters each)"),
        "multilingual.jsonl.gz": (udhr, ["udhr"], "UDHR passages in 60 languages (first half of each)"),
        "math-chat.jsonl.gz": (
            math,
            ["gsm8k"],
            "conversations of 1-3 GSM8K problems; worked solution as reasoning_content",
        ),
        "code.jsonl.gz": (code, ["humaneval"], "HumanEval prompts and canonical solutions (tasks 0-139)"),
        "tool-calls.jsonl.gz": (
            tools,
            ["gsm8k", "humaneval"],
            "tool-call conversations: GSM8K calculator annotations as calculator calls; HumanEval "
            "tests run through run_python (tool output recorded from a real run)",
        ),
    }
    inputs = {
        "gutenberg": prose_files,
        "udhr": udhr_files,
        "gsm8k": [gsm_file],
        "humaneval": [he_file],
    }
    record = {"seed": SEED, "script": "scripts/build_calib_data.py", "sources": {}, "files": {}}
    for key, meta in SOURCES.items():
        record["sources"][key] = {
            **meta,
            "inputs": {str(f.relative_to(data)): sha256_file(f) for f in inputs[key]},
        }
    for name, (rows, srcs, what) in outputs.items():
        digest = write_jsonl_gz(OUT / name, rows)
        record["files"][name] = {
            "rows": len(rows),
            "bytes": (OUT / name).stat().st_size,
            "sha256": digest,
            "sources": srcs,
            "what": what,
        }
        print(f"{name}: {len(rows)} rows, {(OUT / name).stat().st_size:,} bytes")
    (OUT / "sources.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    (OUT / "README.md").write_text(readme(record))


def readme(r: dict) -> str:
    rows = "\n".join(
        f"| `{n}` | {f['rows']} | {f['bytes']:,} | {f['what']} | {', '.join(f['sources'])} |"
        for n, f in r["files"].items()
    )
    srcs = "\n".join(
        f"| {k} | {s['what']} | {s['repo']} | `{s['path']}` | {s['license']} |"
        for k, s in r["sources"].items()
    )
    total = sum(f["bytes"] for f in r["files"].values())
    return README.format(total=total, seed=r["seed"], rows=rows, srcs=srcs)


if __name__ == "__main__":
    main()
