"""The vLLM engine: the LLM backend for GPU machines (`LLMConfig.backend == "vllm"`).

In: an `LLMConfig` (weights location, dtype, context length, and `config.vllm`, passed to vLLM's `AsyncEngineArgs`),
then `GenerationRequest`s. The request's chat messages go through the tokenizer's chat template and reach vLLM's
`AsyncLLM` as token ids. Out: an async stream of `TokenChunk`s, one per generated token, the last one carrying the
finish reason. Closing the stream early aborts the request inside vLLM, so the GPU stops working on it.

vLLM is imported only inside methods: this module imports in environments without vLLM (the CPU test env, the
deployment's import on a machine that runs another backend).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from almquist.config import LLMConfig, resolve_model_ref
from deployments.llm.engine import (
    EngineStats,
    GenerationRequest,
    TokenChunk,
    special_tokens_of,
    template_messages,
)

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM


def _current_placement_group() -> Any:
    """The placement group this process runs in (a Serve replica with `placement_group_bundles`), else None."""
    try:
        import ray
    except ImportError:
        return None
    return ray.util.get_current_placement_group() if ray.is_initialized() else None


class VLLMEngine:
    """One model served by vLLM's async engine (continuous batching across concurrent `stream()` calls)."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.stats = EngineStats()
        self._engine: AsyncLLM | None = None
        self._tokenizer: Any = None

    def engine_args(self) -> Any:
        """The `AsyncEngineArgs` built from the config (public so that a deployment can log or check them)."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        config = self.config
        model = resolve_model_ref(config.model)
        tokenizer = resolve_model_ref(config.tokenizer) if config.tokenizer else None
        if config.gguf_file:
            # vLLM loads GGUF from the file's path, with the tokenizer taken from beside it unless one is named.
            tokenizer = tokenizer or model
            model = os.path.join(model, config.gguf_file)
        options = config.vllm
        kwargs: dict[str, Any] = {
            "model": model,
            "tokenizer": tokenizer,
            "dtype": config.dtype,
            "max_model_len": config.max_model_len,
            "tensor_parallel_size": options.tensor_parallel_size,
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "quantization": options.quantization,
            "enforce_eager": options.enforce_eager,
            "max_num_seqs": options.max_num_seqs,
            # The deployment exports its own metrics; vLLM's periodic stats logging is noise in replica logs.
            "disable_log_stats": True,
        }
        kwargs.update(options.extra)
        return AsyncEngineArgs(**kwargs)

    async def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.perf_counter()
        args = self.engine_args()
        vllm_config = args.create_engine_config()
        group = _current_placement_group()
        if group is not None:
            # Tensor parallelism inside a Serve replica's placement group (as Ray Serve LLM does it): vLLM's engine
            # core runs in a subprocess that is not in the group, so it gets the group explicitly; otherwise it would
            # ask Ray for a second group of GPUs and wait forever beside the first.
            vllm_config.parallel_config.placement_group = group
        self._engine = AsyncLLM.from_vllm_config(vllm_config, disable_log_stats=args.disable_log_stats)
        self._tokenizer = self._engine.get_tokenizer()
        self.stats.extra["init_s"] = time.perf_counter() - started

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        """The chat-templated prompt as token ids (the template adds any BOS itself, so no special tokens here)."""
        tokenizer = self._require_tokenizer()
        messages = template_messages(request, special_tokens_of(tokenizer))
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine = self._require_engine()
        prompt_ids = self.prompt_token_ids(request)
        params = SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            max_tokens=min(request.max_tokens, self.config.max_tokens_limit),
            output_kind=RequestOutputKind.DELTA,
        )
        # Unique per call: vLLM aborts by external id, and a caller may reuse its request_id across turns.
        request_id = f"{request.request_id or 'req'}-{uuid.uuid4().hex[:12]}"
        self.stats.requests += 1
        self.stats.last_request_tokens = 0
        generated: list[int] = []
        outputs = engine.generate(_engine_input(prompt_ids), params, request_id)
        try:
            async for output in outputs:
                completion = output.outputs[0]
                new_ids = list(completion.token_ids)
                texts = self._split_text(generated, new_ids, completion.text)
                finish = _finish_reason(completion.finish_reason) if output.finished else None
                for position, (token_id, text) in enumerate(zip(new_ids, texts, strict=True)):
                    generated.append(token_id)
                    self.stats.tokens_generated += 1
                    self.stats.last_request_tokens += 1
                    last = position == len(new_ids) - 1
                    yield TokenChunk(token_id, text, len(generated) - 1, finish if last else None)
        except (GeneratorExit, asyncio.CancelledError):
            self.stats.cancelled += 1
            await engine.abort(request_id)
            raise
        finally:
            await outputs.aclose()

    def _split_text(self, previous: list[int], new_ids: Sequence[int], text: str) -> list[str]:
        """Shares a delta's text out over its tokens, so that the pieces join to exactly vLLM's text."""
        if len(new_ids) <= 1:
            return [text] * len(new_ids)
        # vLLM merged several steps into one delta because this consumer lagged; split it by decoding prefixes.
        tokenizer = self._require_tokenizer()
        base = tokenizer.decode(previous, skip_special_tokens=True)
        pieces: list[str] = []
        used = 0
        for count in range(1, len(new_ids)):
            decoded = tokenizer.decode([*previous, *new_ids[:count]], skip_special_tokens=True)[len(base) :]
            # A prefix that ends inside a multi-byte character decodes to U+FFFD: give it no text yet.
            if len(decoded) >= used and text.startswith(decoded):
                pieces.append(decoded[used:])
                used = len(decoded)
            else:
                pieces.append("")
        pieces.append(text[used:])
        return pieces

    async def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def _require_engine(self) -> AsyncLLM:
        if self._engine is None:
            raise RuntimeError("VLLMEngine.start() has not been awaited")
        return self._engine

    def _require_tokenizer(self) -> Any:
        self._require_engine()
        return self._tokenizer


def _engine_input(prompt_ids: list[int]) -> Any:
    """Token ids as an already rendered engine input (vLLM 0.32 deprecates raw prompts in `generate`)."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:  # older vLLM: the TokensPrompt dict is the supported form there
        return {"prompt_token_ids": prompt_ids}
    return tokens_input(prompt_ids)


def _finish_reason(reason: str | None) -> Literal["stop", "length"]:
    return "length" if reason == "length" else "stop"
