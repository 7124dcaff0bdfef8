"""Serve composition overhead: one turn through ingress -> router -> llm as Serve handles (and through the gRPC
proxy) versus the same Python objects called directly in one process, same model, N turns each.

Run: `python -m benchmarks.composition_overhead [--turns 50] [--max-tokens 8]`. Prints median and p95 of the
whole turn and of the time to first token, and each path's ratio to the in-process baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from almquist import runtime
from almquist.config import AppConfig

console = Console(width=150)  # a table wider than a pipe's default 80 columns
# Chit-chat: the router sends it to the LLM, so every path generates tokens (a knowledge question on an empty
# knowledge base is answered "not found" without the LLM, and the benchmark would time nothing of the model).
QUESTION = "Tell me something cheerful about the weekend."


class NothingGenerated(RuntimeError):
    """A path answered without tokens: its timings would say nothing about composing the model."""


class LocalHandle:
    """Stands in for a DeploymentHandle: `.options(...).method.remote(...)` calls the object directly."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def options(self, **_: Any) -> LocalHandle:
        return self

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        return type("LocalMethod", (), {"remote": staticmethod(method)})


async def construct(cls: type, *args: Any) -> Any:
    """Builds a deployment's class the way its replica would, async constructors included."""
    user_cls = cls.func_or_class  # type: ignore[attr-defined]
    obj = user_cls.__new__(user_cls)
    result = user_cls.__init__(obj, *args)
    if inspect.isawaitable(result):
        await result
    return obj


async def in_process_graph(config: AppConfig) -> Any:
    from deployments.embeddings import Embeddings
    from deployments.llm.server import LLMServer
    from graphs.graph_rag import GraphRAG
    from graphs.handles import Handles
    from graphs.ingress import ConversationIngress
    from graphs.router import Router

    embeddings = LocalHandle(await construct(Embeddings, config.embeddings))
    llm = LocalHandle(await construct(LLMServer, config.llm))
    graph_rag = LocalHandle(await construct(GraphRAG, llm, embeddings))
    router = LocalHandle(await construct(Router, llm, graph_rag, embeddings, config.router))
    # LocalHandles stand in for DeploymentHandles (duck-typed: `.options(...).method.remote(...)`)
    handles = Handles(router=router, graph_rag=graph_rag, llm=llm, embeddings=embeddings)  # type: ignore[arg-type]
    return await construct(ConversationIngress, handles, config)


async def time_turn(events: Callable[[], Any]) -> tuple[float, float, int]:
    """(seconds to first token, seconds to TurnEnd, tokens) for one turn's async event stream."""
    started = time.perf_counter()
    first = None
    tokens = 0
    async for event in events():
        if event.WhichOneof("event") == "token":
            tokens += 1
            first = first or time.perf_counter() - started
        elif event.WhichOneof("event") == "turn_end" and not tokens:
            raise NothingGenerated(f"a turn ended without tokens: {event.turn_end}")
    return first or float("nan"), time.perf_counter() - started, tokens


def summarise(name: str, samples: list[tuple[float, float, int]]) -> dict[str, float | str]:
    ttft = [s[0] for s in samples]
    total = [s[1] for s in samples]

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1]

    return {
        "path": name,
        "ttft_median": statistics.median(ttft),
        "ttft_p95": p95(ttft),
        "turn_median": statistics.median(total),
        "turn_p95": p95(total),
        "tokens": statistics.median(s[2] for s in samples),
    }


async def measure(label: str, run_turn: Callable[[], Awaitable[tuple[float, float, int]]], turns: int):
    await run_turn()  # warm-up: first-call costs (lazy router examples, kernels) are not composition overhead
    samples = []
    with console.status(f"{label}: {turns} turns"):
        for _ in range(turns):
            samples.append(await run_turn())
    return summarise(label, samples)


async def main(turns: int, max_tokens: int) -> None:
    import ray

    from almquist.client import Client
    from almquist.config.security import StateConfig
    from almquist.credentials import ensure_owner_key
    from almquist.v1 import conversation_pb2

    # identities and sessions of this run only, never the user's (the gRPC path calls with an owner key of its own)
    scratch = tempfile.mkdtemp(prefix="almquist-bench-")
    os.environ["ALMQUIST_STATE_URL"] = f"sqlite:///{scratch}/state.db"
    os.environ["ALMQUIST_CREDENTIALS"] = f"{scratch}/credentials"
    ensure_owner_key(StateConfig())
    schema = runtime.load_profile("local", grpc_port=runtime.free_port(), http_port=runtime.free_port())
    schema.applications[0].args["state"] = StateConfig().model_dump()
    args = dict(schema.applications[0].args)
    config = AppConfig.model_validate(args)
    request = conversation_pb2.AskRequest(text=QUESTION, max_tokens=max_tokens)

    # "local": a Ray of its own even while `almquist up` runs one on this machine (ray.init would join that one)
    ray.init("local", num_cpus=4, include_dashboard=False, namespace="serve", log_to_driver=False)
    rows = []
    with console.status("loading the in-process graph"):
        ingress = await in_process_graph(config)
    rows.append(await measure("in-process Python calls", lambda: time_turn(lambda: ingress.AskStream(request)), turns))

    with console.status("deploying the local profile on Serve"):
        runtime.deploy(schema)
        runtime.wait_running(["conversation"])
    from ray import serve

    handle = serve.get_app_handle("conversation").options(stream=True)
    rows.append(
        await measure(
            "Serve handles (ingress->router->llm)", lambda: time_turn(lambda: handle.AskStream.remote(request)), turns
        )
    )

    client = Client(f"localhost:{schema.grpc_options.port}")

    async def grpc_turn() -> tuple[float, float, int]:
        # The sync client runs in a thread; time to first token is taken inside it so it is not lost to batching.
        def run() -> tuple[float, float, int]:
            started = time.perf_counter()
            first, tokens = None, 0
            for event in client.ask_stream(QUESTION, max_tokens=max_tokens):
                if event.WhichOneof("event") == "token":
                    tokens += 1
                    first = first or time.perf_counter() - started
                elif event.WhichOneof("event") == "turn_end" and not tokens:
                    raise NothingGenerated(f"a turn ended without tokens: {event.turn_end}")
            return first or float("nan"), time.perf_counter() - started, tokens

        return await asyncio.to_thread(run)

    rows.append(await measure("gRPC proxy + Serve handles", grpc_turn, turns))
    serve.shutdown()
    ray.shutdown()

    base = rows[0]
    table = Table(title=f"Composition overhead: {turns} turns, max_tokens={max_tokens}, same model (SmolLM2-135M, CPU)")
    for column in ("path", "TTFT median", "TTFT p95", "turn median", "turn p95", "tokens", "turn median / baseline"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for row in rows:
        table.add_row(
            str(row["path"]),
            f"{row['ttft_median'] * 1000:.0f} ms",
            f"{row['ttft_p95'] * 1000:.0f} ms",
            f"{row['turn_median'] * 1000:.0f} ms",
            f"{row['turn_p95'] * 1000:.0f} ms",
            f"{row['tokens']:.0f}",
            f"{row['turn_median'] / base['turn_median']:.2f}x",
        )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=8)
    options = parser.parse_args()
    asyncio.run(main(options.turns, options.max_tokens))
