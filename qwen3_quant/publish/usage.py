"""The "How to run it" section of a model card: the format's own snippets (``QuantFormat.usage``),
then Qwen3's thinking switch and sampling, which hold in every runtime. Also the pieces formats
share: the example prompt, Qwen3's recommended sampling, and the transformers snippet (the
reference runtime's, used for checkpoints of formats the registry does not know)."""

from __future__ import annotations

from ..formats.base import UsageContext

PROMPT = "Explain what a KV cache is in two sentences."
# Qwen3's recommended sampling (model card): thinking 0.6/0.95/20, non-thinking 0.7/0.8/20, min_p 0
THINKING_SAMPLING = "temperature=0.6, top_p=0.95, top_k=20, min_p=0"
PLAIN_SAMPLING = "temperature=0.7, top_p=0.8, top_k=20, min_p=0"

__all__ = ["PROMPT", "THINKING_SAMPLING", "PLAIN_SAMPLING", "UsageContext", "usage_section"]


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


def transformers_usage(
    ctx: UsageContext, *, install: str = "pip install transformers", note: str = ""
) -> str:
    """transformers, then vLLM and SGLang, loading the repo (or the local folder)."""
    src = ctx.repo_id or ctx.name
    return f"""### transformers

```sh
{install}
```
{note}
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

### vLLM and SGLang

```sh
vllm serve {src} --reasoning-parser qwen3
python -m sglang.launch_server --model-path {src} --reasoning-parser qwen3
```

Both serve an OpenAI-compatible API; turn thinking off per request with
`extra_body={{"chat_template_kwargs": {{"enable_thinking": False}}}}`. These servers were not part
of this artifact's validation (it ran in {ctx.validated_in}).
"""


def usage_section(ctx: UsageContext) -> str:
    from ..formats import FORMATS, get_format

    body = get_format(ctx.fmt).usage(ctx) if ctx.fmt in FORMATS else transformers_usage(ctx)
    return "## How to run it\n\n" + body + "\n" + thinking_section()
