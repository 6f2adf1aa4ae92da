"""The "how to run it" section of a model card: each runtime that loads the format, with Qwen3's
thinking switch. ``repo_id`` None means a local publish: the snippets then load from the folder."""

from __future__ import annotations

from dataclasses import dataclass

PROMPT = "Explain what a KV cache is in two sentences."
# Qwen3's recommended sampling (model card): thinking 0.6/0.95/20, non-thinking 0.7/0.8/20, min_p 0
THINKING_SAMPLING = "temperature=0.6, top_p=0.95, top_k=20, min_p=0"
PLAIN_SAMPLING = "temperature=0.7, top_p=0.8, top_k=20, min_p=0"


@dataclass(frozen=True)
class UsageContext:
    fmt: str
    name: str  # repo / folder name
    repo_id: str | None
    variant_files: dict[str, list[str]]  # variant -> its files, in manifest order
    validated_in: str  # runtime(s) the validation ran in
    moe: bool = False
    genai_dir: str = "."  # ONNX: folder (relative) that holds genai_config.json


def thinking_section() -> str:
    return f"""### Thinking and non-thinking modes

Qwen3 thinks (writes a `<think>...</think>` block) before answering by default.

- **Hard switch**: the chat template takes `enable_thinking`; `enable_thinking=False` makes the model
  answer directly (transformers: `tokenizer.apply_chat_template(..., enable_thinking=False)`;
  vLLM / SGLang / llama-server requests: `"chat_template_kwargs": {{"enable_thinking": false}}`).
- **Soft switch**: with thinking enabled, add `/no_think` to a user or system message to skip
  thinking for that turn, `/think` to turn it back on. Works in every runtime, including those that
  apply the template without extra arguments (llama-cpp-python, onnxruntime-genai).
- Sampling the Qwen3 authors recommend: thinking `{THINKING_SAMPLING}`; non-thinking
  `{PLAIN_SAMPLING}`. Do not use greedy decoding in thinking mode (endless repetitions).
"""


def _pick(ctx: UsageContext) -> str:
    names = list(ctx.variant_files)
    for preferred in ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"):
        if preferred in names:
            return preferred
    return names[0]


def _gguf(ctx: UsageContext) -> str:
    v = _pick(ctx)
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
    return f"""### llama.cpp

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
    temperature=0.7, top_p=0.8, top_k=20, min_p=0,
)
print(out["choices"][0]["message"]["content"])
```
"""


def _transformers(ctx: UsageContext) -> str:
    src = ctx.repo_id or ctx.name
    needs = {
        "gptq": "pip install transformers optimum gptqmodel",
        "awq": "pip install transformers gptqmodel",
    }.get(ctx.fmt, "pip install transformers")
    moe = (
        """
This is a Qwen3-MoE checkpoint with per-expert quantised weights. transformers 5 fuses the experts
of Qwen3-MoE when it loads a model; load through GPTQModel (`GPTQModel.load(...)`), or run
`import defuser; defuser.replace_fused_blocks("qwen3_moe")` before `from_pretrained`, otherwise the
experts keep random weights (check the missing/unexpected keys warning).
"""
        if ctx.moe and ctx.fmt in ("gptq", "awq")
        else ""
    )
    servers = ""
    if ctx.fmt in ("gptq", "awq", "transformers"):
        servers = f"""
### vLLM and SGLang

```sh
vllm serve {src} --reasoning-parser qwen3
python -m sglang.launch_server --model-path {src} --reasoning-parser qwen3
```

Both serve an OpenAI-compatible API; turn thinking off per request with
`extra_body={{"chat_template_kwargs": {{"enable_thinking": False}}}}`. These servers were not part
of this artifact's validation (it ran in {ctx.validated_in}).
"""
    return f"""### transformers

```sh
{needs}
```
{moe}
```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{src}")
model = AutoModelForCausalLM.from_pretrained("{src}", device_map="auto")
messages = [{{"role": "user", "content": "{PROMPT}"}}]
text = tokenizer.apply_chat_template(
    messages, tokenize=False, add_generation_prompt=True, enable_thinking=False  # True: think first
)
inputs = tokenizer(text, return_tensors="pt").to(model.device)
out = model.generate(**inputs, max_new_tokens=512, do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
print(tokenizer.decode(out[0][inputs.input_ids.shape[1] :], skip_special_tokens=True))
```
{servers}"""


def _onnx(ctx: UsageContext) -> str:
    folder = ctx.name if ctx.genai_dir in ("", ".") else f"{ctx.name}/{ctx.genai_dir}"
    download = (
        f"""```sh
pip install onnxruntime-genai huggingface_hub
hf download {ctx.repo_id} --local-dir {ctx.name}
```
"""
        if ctx.repo_id
        else "```sh\npip install onnxruntime-genai\n```\n"
    )
    return f"""### onnxruntime-genai

{download}
```python
import json

import onnxruntime_genai as og

model = og.Model("{folder}")  # the folder with genai_config.json
tokenizer = og.Tokenizer(model)
stream = tokenizer.create_stream()
messages = json.dumps([{{"role": "user", "content": "{PROMPT} /no_think"}}])
prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
params = og.GeneratorParams(model)
params.set_search_options(max_length=2048, do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
generator = og.Generator(model, params)
generator.append_tokens(tokenizer.encode(prompt))
while not generator.is_done():
    generator.generate_next_token()
    print(stream.decode(generator.get_next_tokens()[0]), end="", flush=True)
```

onnxruntime-genai applies the chat template without extra arguments: use the `/no_think` and
`/think` soft switches, or build the prompt with transformers'
`apply_chat_template(..., enable_thinking=False)` and pass its text to `tokenizer.encode`.
"""


def usage_section(ctx: UsageContext) -> str:
    if ctx.fmt == "gguf":
        body = _gguf(ctx)
    elif ctx.fmt == "onnx":
        body = _onnx(ctx)
    else:
        body = _transformers(ctx)
    return "## How to run it\n\n" + body + "\n" + thinking_section()
