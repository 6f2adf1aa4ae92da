"""The ONNX model card's "How to run it": onnxruntime-genai on the published folder."""

from __future__ import annotations

from ...publish.usage import PROMPT
from ..base import UsageContext


def genai_dir(files: list[str]) -> str:
    """The folder (relative) that holds genai_config.json."""
    for f in files:
        if f.endswith("genai_config.json"):
            return f.rpartition("/")[0] or "."
    return "."


def onnx_usage(ctx: UsageContext) -> str:
    sub = genai_dir(ctx.files)
    folder = ctx.name if sub == "." else f"{ctx.name}/{sub}"
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
