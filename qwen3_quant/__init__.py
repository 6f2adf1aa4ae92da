"""qwen3-quant: quantise Qwen3 / Qwen3-MoE to GPTQ, AWQ, GGUF and ONNX, validate in the serving
runtime, publish what passed. Heavy libraries are imported only by the functions that need them."""

__version__ = "0.1.0"
