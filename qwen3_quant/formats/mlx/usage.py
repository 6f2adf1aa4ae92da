"""The MLX model card's "How to run it": mlx-lm's command line and Python API, as mlx-community's
cards show them."""

from __future__ import annotations

from ...publish.usage import PROMPT
from ..base import UsageContext


def mlx_usage(ctx: UsageContext) -> str:
    src = ctx.repo_id or ctx.name
    return f"""### mlx-lm

```sh
pip install mlx-lm          # Apple silicon; on Linux: pip install "mlx[cpu]" mlx-lm (or mlx[cuda])
mlx_lm.generate --model {src} --prompt "{PROMPT}" --temp 0.7 --top-p 0.8 --top-k 20 \\
  --chat-template-config '{{"enable_thinking": false}}'
mlx_lm.chat --model {src}    # interactive chat with the model's chat template
mlx_lm.server --model {src}  # OpenAI-compatible API on http://127.0.0.1:8080
```

```python
from mlx_lm import generate, load
from mlx_lm.sample_utils import make_sampler

model, tokenizer = load("{src}")
messages = [{{"role": "user", "content": "{PROMPT}"}}]
prompt = tokenizer.apply_chat_template(
    messages, add_generation_prompt=True, enable_thinking=False  # True: think first
)
sampler = make_sampler(temp=0.7, top_p=0.8, top_k=20)
print(generate(model, tokenizer, prompt=prompt, max_tokens=512, sampler=sampler, verbose=False))
```

The chat template (`chat_template.jinja`) is Qwen3's, with its `enable_thinking` switch.
"""
