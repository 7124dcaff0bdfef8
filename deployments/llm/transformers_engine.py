"""The CPU engine: a Hugging Face transformers causal LM, generating in a worker thread.

In: `GenerationRequest`. Out: `TokenChunk`s as `model.generate` produces them (a streamer hands each token from
the generation thread to the event loop). Closing the stream sets a stopping criterion, so the model stops within
one token. GGUF weights are dequantised by transformers on first load and cached as safetensors beside the
tokenizer, so later starts load through plain `from_pretrained(cache_dir)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from almquist.config import LLMConfig, default_cache_dir, resolve_model_ref
from deployments.llm.engine import (
    EngineStats,
    GenerationRequest,
    TokenChunk,
    special_tokens_of,
    template_messages,
)

logger = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "auto": "auto"}


def converted_cache_dir(config: LLMConfig) -> Path:
    """Cache folder for a GGUF's dequantised weights, keyed by the file's path, size and mtime."""
    gguf = Path(resolve_model_ref(config.model)) / (config.gguf_file or "")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}|{config.dtype}".encode()).hexdigest()[:16]
    return default_cache_dir() / "llm" / f"{gguf.stem}-{key}"


def load_model_and_tokenizer(config: LLMConfig) -> tuple[Any, Any]:
    """Loads through `from_pretrained`; a GGUF is converted once and then read from the cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = resolve_model_ref(config.model)
    dtype = getattr(torch, config.dtype) if config.dtype != "auto" else "auto"
    if not config.gguf_file:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref(config.tokenizer or config.model))
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
        return model, tokenizer

    cache = converted_cache_dir(config)
    if config.cache_converted and (cache / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(cache, dtype=dtype), AutoTokenizer.from_pretrained(cache)

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=config.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(location, gguf_file=config.gguf_file, dtype=dtype)
    logger.info("dequantised %s in %.1fs", config.gguf_file, time.monotonic() - started)
    if config.cache_converted:
        _save_converted(model, tokenizer, cache)
    return model, tokenizer


def _save_converted(model: Any, tokenizer: Any, cache: Path) -> None:
    """Writes config + safetensors + tokenizer into a temp folder and renames it: replicas may race here."""
    from safetensors.torch import save_model

    tmp = cache.with_name(f"{cache.name}.tmp-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # save_pretrained refuses GGUF-loaded models; the dequantised weights are plain tensors, so save them directly.
    config = model.config
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.save_pretrained(tmp)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(cache)
    except OSError:  # another replica finished first: its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)


class _TokenQueueStreamer:
    """transformers streamer that forwards generated token ids from the generation thread to an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[int | None]) -> None:
        self._loop = loop
        self._queue = queue
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first passes the prompt ids
            self._prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, int(token_id))

    def end(self) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)


class TransformersEngine:
    """LLM engine on transformers (CPU or one GPU). See the module docstring for what flows in and out."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.stats = EngineStats()
        self._model: Any = None
        self._tokenizer: Any = None
        self._special_tokens: tuple[str, ...] | None = None  # the tokenizer's, removed from message text
        self._lock = asyncio.Lock()  # one generation at a time: on CPU they would only slow each other down

    async def start(self) -> None:
        import torch

        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        started = time.monotonic()
        self._model, self._tokenizer = await asyncio.to_thread(load_model_and_tokenizer, self.config)
        self._model.to(self.config.device).eval()
        self.stats.extra["load_s"] = time.monotonic() - started

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The chat template applied to the request's messages, as token ids."""
        if self._special_tokens is None:
            self._special_tokens = special_tokens_of(self._tokenizer)
        messages = template_messages(request, self._special_tokens)
        ids = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        if self._model is None:
            raise RuntimeError("TransformersEngine.stream() called before start()")
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):  # type: ignore[override]
                return cancel.is_set()

        prompt = self.prompt_ids(request)
        max_new = min(request.max_tokens, max(1, self.config.max_model_len - len(prompt)))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([prompt], device=self.config.device),
            "attention_mask": torch.ones(1, len(prompt), dtype=torch.long, device=self.config.device),
            "max_new_tokens": max_new,
            "streamer": _TokenQueueStreamer(loop, queue),
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
            "pad_token_id": self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        }
        if request.temperature > 0:
            kwargs.update(do_sample=True, temperature=request.temperature, top_p=request.top_p)
            if request.seed is not None:
                torch.manual_seed(request.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)

        eos_ids = self._eos_ids()
        async with self._lock:
            self.stats.requests += 1
            worker = loop.run_in_executor(None, self._generate, kwargs)
            generated: list[int] = []
            emitted_text = ""
            pending: TokenChunk | None = None  # held back one token so the last chunk can carry finish_reason
            finish: str | None = None
            try:
                while (token_id := await queue.get()) is not None:
                    self.stats.tokens_generated += 1
                    if token_id in eos_ids:
                        finish = "stop"
                        continue
                    generated.append(token_id)
                    text = self._tokenizer.decode(generated, skip_special_tokens=True)
                    delta = "" if text.endswith("\ufffd") else text[len(emitted_text) :]
                    emitted_text += delta
                    if pending is not None:
                        yield pending
                    pending = TokenChunk(token_id=token_id, text=delta, index=len(generated) - 1)
                await worker
                if pending is not None:
                    reason = finish or ("length" if len(generated) >= max_new else "stop")
                    yield TokenChunk(pending.token_id, pending.text, pending.index, reason)  # type: ignore[arg-type]
                self.stats.last_request_tokens = len(generated)
            except (GeneratorExit, asyncio.CancelledError):
                cancel.set()
                self.stats.cancelled += 1
                self.stats.last_request_tokens = len(generated)
                await asyncio.shield(worker)  # the model stops within one token; keep the lock until it has
                raise

    def _generate(self, kwargs: dict[str, Any]) -> None:
        import torch

        with torch.inference_mode():
            self._model.generate(**kwargs)

    def _eos_ids(self) -> set[int]:
        ids = self._model.generation_config.eos_token_id
        if ids is None:
            ids = self._tokenizer.eos_token_id
        return set(ids if isinstance(ids, list) else [ids])

    async def shutdown(self) -> None:
        self._model = None
