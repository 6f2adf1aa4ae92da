"""The GGUF model card's "How to run it": llama.cpp's tools and llama-cpp-python, per variant tag."""

from __future__ import annotations

from ...publish.usage import PLAIN_SAMPLING, PROMPT
from ..base import UsageContext
from .ollama import PARAMS, TEMPLATE

PREFERRED = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")  # the variant the snippets load, when published


def pick_variant(names: list[str]) -> str:
    return next((p for p in PREFERRED if p in names), names[0])


def gguf_usage(ctx: UsageContext) -> str:
    v = pick_variant(list(ctx.variant_files))
    files = ctx.variant_files[v]
    first = files[0]
    others = ", ".join(f'"{f}"' for f in files[1:])
    tags = ", ".join(f"`{n}`" for n in ctx.variant_files)
    split = len(files) > 1  # a variant's files are its llama.cpp splits
    if ctx.repo_id:
        cli = f"""```sh
llama-cli -hf {ctx.repo_id}:{v}
llama-server -hf {ctx.repo_id}:{v} --jinja -c 32768   # OpenAI-compatible API on http://127.0.0.1:8080
```"""
        extra = f", additional_files=[{others}]" if split else ""
        py_load = f'Llama.from_pretrained(repo_id="{ctx.repo_id}", filename="{first}"{extra}, n_ctx=8192)'
    else:
        cli = f"""```sh
llama-cli -m {ctx.name}/{first}
llama-server -m {ctx.name}/{first} --jinja -c 32768   # OpenAI-compatible API on http://127.0.0.1:8080
```"""
        py_load = f'Llama(model_path="{ctx.name}/{first}", n_ctx=8192)'
    split_note = (
        "\nThe file is split (llama.cpp `gguf-split` naming); point llama.cpp at the first part and it "
        "loads the others from the same folder.\n"
        if split
        else ""
    )
    return f"""{ollama_usage(ctx)}### llama.cpp

Pick a variant by its tag ({tags}):

{cli}
{split_note}
Thinking off for a whole server: `--reasoning off` (recent llama.cpp; older builds:
`--chat-template-kwargs '{{"enable_thinking": false}}'`); per request: `"chat_template_kwargs":
{{"enable_thinking": false}}`.

### llama-cpp-python

```python
from llama_cpp import Llama

llm = {py_load}
out = llm.create_chat_completion(
    messages=[{{"role": "user", "content": "{PROMPT} /no_think"}}],
    {PLAIN_SAMPLING},
)
print(out["choices"][0]["message"]["content"])
```
"""


def ollama_usage(ctx: UsageContext) -> str:
    """Ollama and LM Studio, one line per type; what the repo's ``params`` / ``template`` set."""
    if not ctx.repo_id:
        first = ctx.variant_files[pick_variant(list(ctx.variant_files))][0]
        return f"""### Ollama and LM Studio

From this folder: a Modelfile with `FROM ./{first}` and `ollama create`, or LM Studio's
`lms import {ctx.name}/{first}`. Published to the Hub, the repo runs with `ollama run hf.co/ORG/REPO:TYPE`.

"""
    runs = "\n".join(f"ollama run hf.co/{ctx.repo_id}:{v}" for v in ctx.variant_files)
    picks = "\n".join(f"- `{v}`: `{files[0]}`" for v, files in ctx.variant_files.items())
    notes = []
    if PARAMS in ctx.files:
        notes.append(
            f"The repo's `{PARAMS}` file gives Ollama the model's recommended sampling (from its "
            "`generation_config.json`, Qwen3's thinking-mode values) and its stop tokens."
        )
    if TEMPLATE in ctx.files:
        notes.append(f"The repo's `{TEMPLATE}` file gives Ollama the chat template.")
    else:
        notes.append("Ollama takes the chat template from the GGUF (the Hub maps Qwen3's to Ollama's).")
    return f"""### Ollama

```sh
{runs}
```

{" ".join(notes)} Without thinking, Qwen3's recommended sampling differs: in a chat session type
`/set parameter temperature 0.7`, `/set parameter top_p 0.8` and add `/no_think` to your message
(recent Ollama: `ollama run ... --think=false`).

### LM Studio

Search `{ctx.repo_id}` in the Discover tab (or `lms get https://huggingface.co/{ctx.repo_id}`) and pick a file:

{picks}

Set temperature 0.6, top-p 0.95, top-k 20 with thinking; 0.7, 0.8, 20 without (add `/no_think`).

"""
