"""The GPTQ / AWQ model card's "How to run it": transformers with GPTQModel's kernels, vLLM, SGLang."""

from __future__ import annotations

from ...publish.usage import transformers_usage
from ..base import UsageContext

INSTALL = {"gptq": "pip install transformers optimum gptqmodel", "awq": "pip install transformers gptqmodel"}
MOE_NOTE = """
This is a Qwen3-MoE checkpoint with per-expert quantised weights. transformers 5 fuses the experts
of Qwen3-MoE when it loads a model; load through GPTQModel (`GPTQModel.load(...)`), or run
`import defuser; defuser.replace_fused_blocks("qwen3_moe")` before `from_pretrained`, otherwise the
experts keep random weights (check the missing/unexpected keys warning).
"""


def gptqmodel_usage(ctx: UsageContext) -> str:
    return transformers_usage(ctx, install=INSTALL[ctx.fmt], note=MOE_NOTE if ctx.moe else "")
