"""Real-time ingestion: the news pipeline's throughput against the embedding model's own, and freshness.

1. Throughput: N synthetic items (distinct stories, no duplicates) through `ingest_items` (Ray Data, embedding,
   dedup, linking, both stores, a commit) versus the embedding model alone: the same actor class with the same
   resources, fed the same chunk texts in the same batch size. Items per second, medians of R runs, and the ratio,
   for the pipeline with a warm embedder (how the FeedScheduler runs it) and with a pool started for the run.
2. Freshness: a local feed server where a new item appears every few seconds for D seconds; the FeedScheduler polls
   it at its default interval (SourceConfig.poll_interval_s) and ingests; per item, the seconds from its appearance
   to the commit that makes it answerable. p50 / p99.

Run: `python -m benchmarks.news_ingestion [--items 1000] [--runs 3] [--duration 300] [--interval 60]`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import ray
from rich.console import Console
from rich.table import Table

from almquist.config.knowledge import GraphStoreConfig, KnowledgeConfig, VectorStoreConfig
from ingestion.news import NewsSettings, chunk_text, ingest_items, start_embedder
from ingestion.sources.model import Item, SourceConfig, item_id_for

console = Console(width=150)
WORDS = [
    "harbour",
    "council",
    "orchestra",
    "glacier",
    "festival",
    "market",
    "archive",
    "vineyard",
    "stadium",
    "satellite",
    "ferry",
    "library",
    "bakery",
    "museum",
    "reactor",
    "canal",
    "summit",
    "rover",
    "lighthouse",
    "monastery",
    "observatory",
    "tram",
    "bridge",
    "quarry",
    "meadow",
    "railway",
    "studio",
    "parliament",
    "airline",
    "telescope",
    "cathedral",
    "volcano",
    "reservoir",
    "laboratory",
    "theatre",
    "academy",
    "gallery",
    "workshop",
]
VERBS = [
    "opens",
    "closes",
    "restores",
    "funds",
    "delays",
    "doubles",
    "maps",
    "recalls",
    "welcomes",
    "rebuilds",
    "honours",
    "tests",
]
PLACES = [
    "Lisbon",
    "Oslo",
    "Nairobi",
    "Osaka",
    "Quito",
    "Tallinn",
    "Hobart",
    "Leeds",
    "Porto",
    "Cusco",
    "Dakar",
    "Bergen",
    "Malmo",
    "Perth",
]


def synthetic_items(count: int, seed: int, source: str = "bench") -> list[Item]:
    """Distinct stories of a few sentences (400-900 characters), reproducible from the seed."""
    rng = random.Random(seed)
    items = []
    for n in range(count):
        place = rng.choice(PLACES)
        sentences = [
            f"The {rng.choice(WORDS)} of {place} {rng.choice(VERBS)} its {rng.choice(WORDS)} after "
            f"{rng.randint(2, 90)} {rng.choice(['days', 'weeks', 'years'])} of {rng.choice(WORDS)} work."
            for _ in range(rng.randint(6, 11))
        ]
        title = f"{place} {rng.choice(WORDS)} {rng.choice(VERBS)} {rng.choice(WORDS)} #{seed}-{n}"
        key = f"https://bench.invalid/{seed}/{n}"
        items.append(
            Item(source, "news", item_id_for("url", key), title, " ".join(sentences), key, time.time(), time.time())
        )
    return items


def embed_texts(items: list[Item], settings: NewsSettings) -> list[str]:
    """The texts the pipeline embeds for these items (title + first chunk, then the other chunks)."""
    texts = []
    for item in items:
        for index, piece in enumerate(chunk_text(item.text, settings.chunk_chars, settings.chunk_overlap)):
            texts.append(f"{item.title}. {piece}" if index == 0 else piece)
    return texts


def baseline_items_per_s(embedder: Any, items: list[Item], settings: NewsSettings) -> float:
    """The embedding model alone: its actor (same class and resources as the pipeline's) fed the items' texts."""
    texts = embed_texts(items, settings)
    started = time.perf_counter()
    for start in range(0, len(texts), settings.embed_batch_size):
        ray.get(embedder.embed.remote(texts[start : start + settings.embed_batch_size]))
    return len(items) / (time.perf_counter() - started)


def throughput(count: int, runs: int, root: Path) -> dict[str, Any]:
    config = KnowledgeConfig(graph=GraphStoreConfig(path=root / "graph"), vectors=VectorStoreConfig(path=root / "q"))
    settings = NewsSettings()
    embedder = start_embedder(config)
    ingest_items(synthetic_items(16, seed=999), config, batch_key="warmup", embedder=embedder)  # store actor, model
    rates: dict[str, list[float]] = {"baseline": [], "warm": [], "cold": []}
    embed_share = []
    for run in range(runs):
        items = synthetic_items(count, seed=run)
        rates["baseline"].append(baseline_items_per_s(embedder, items, settings))
        report = ingest_items(items, config, batch_key=f"warm-{run}", settings=settings, embedder=embedder)
        assert report.stored == count, f"run {run}: stored {report.stored} of {count}"
        rates["warm"].append(count / report.wall_s)
        embed_share.append(report.embed_s / report.wall_s)
        cold = ingest_items(synthetic_items(count, seed=1000 + run), config, batch_key=f"cold-{run}", settings=settings)
        assert cold.stored == count, f"run {run}: stored {cold.stored} of {count}"
        rates["cold"].append(count / cold.wall_s)
    return {
        **{name: statistics.median(values) for name, values in rates.items()},
        "embed_share": statistics.median(embed_share),
        "runs": runs,
        "items": count,
        "chunks_per_item": len(embed_texts(synthetic_items(count, 0), settings)) / count,
    }


class _GrowingFeed:
    """An RSS feed whose items appear one by one on a schedule; ETag by content, 304 when unchanged."""

    def __init__(self, items: list[tuple[float, Item]]) -> None:
        self.items = items

    def body(self) -> bytes:
        now = time.time()
        entries = "".join(
            f"<item><title>{item.title}</title><description>{item.text}</description><link>{item.url}</link>"
            f"<pubDate>{time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime(at))}</pubDate></item>"
            for at, item in self.items
            if at <= now
        )
        channel = f"<channel><title>bench</title>{entries}</channel>"
        return f'<?xml version="1.0"?><rss version="2.0">{channel}</rss>'.encode()


def serve_feed(feed: _GrowingFeed) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = feed.body()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def freshness(duration_s: float, interval_s: float, root: Path) -> dict[str, Any]:
    from ingestion.feed_scheduler import FeedScheduler

    config = KnowledgeConfig(graph=GraphStoreConfig(path=root / "graph"), vectors=VectorStoreConfig(path=root / "q"))
    rng = random.Random(7)
    start = time.time() + interval_s / 2  # the first poll finds an empty feed: every item appears after a poll
    times, at = [], start
    while at < start + duration_s:
        times.append(at)
        at += rng.uniform(2, 8)
    feed = _GrowingFeed(list(zip(times, synthetic_items(len(times), seed=4242, source="live"), strict=True)))
    server = serve_feed(feed)
    delays: list[float] = []
    embedder = start_embedder(config)  # what the scheduler itself keeps warm

    def ingest(items: list[Item], knowledge: Any, *, batch_key: str) -> Any:
        report = ingest_items(items, knowledge, batch_key=batch_key, embedder=embedder)
        delays.extend(report.freshness_s)
        return report

    source = SourceConfig(
        name="live", kind="rss", url=f"http://127.0.0.1:{server.server_address[1]}/feed.xml", poll_interval_s=interval_s
    )
    scheduler = FeedScheduler([source], root / "state", config, ingest_fn=ingest)
    scheduler.start()
    try:
        deadline = start + duration_s + 2 * interval_s + 120
        while len(delays) < len(times) and time.time() < deadline:
            time.sleep(1)
    finally:
        scheduler.stop()
        server.shutdown()
    return {
        "items": len(times),
        "measured": len(delays),
        "p50": statistics.median(delays) if delays else float("nan"),
        "p99": float(np.percentile(delays, 99)) if delays else float("nan"),
        "interval": interval_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds during which items appear")
    parser.add_argument("--interval", type=float, default=SourceConfig.model_fields["poll_interval_s"].default)
    args = parser.parse_args(argv)
    ray.init("local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            speed = throughput(args.items, args.runs, Path(tmp) / "throughput")
            table = Table(title=f"News pipeline throughput ({speed['items']} items, median of {speed['runs']} runs)")
            for column in ("path", "items/s", "ratio to the embedding model alone"):
                table.add_column(column)
            table.add_row(
                "the embedding model alone (its actor, same texts and batches)", f"{speed['baseline']:.1f}", "1.00"
            )
            for name, label in (
                ("warm", "ingest_items, warm embedder (the FeedScheduler's way)"),
                ("cold", "ingest_items, a pool started for the run (batch mode)"),
            ):
                table.add_row(label, f"{speed[name]:.1f}", f"{speed[name] / speed['baseline']:.2f}")
            console.print(table)
            console.print(
                f"chunks per item {speed['chunks_per_item']:.2f}; with a warm embedder, embedding is"
                f" {speed['embed_share']:.0%} of the pipeline's wall time"
            )
            fresh = freshness(args.duration, args.interval, Path(tmp) / "freshness")
            table = Table(title=f"Freshness: appearance -> answerable, poll interval {fresh['interval']:.0f} s")
            for column in ("items appeared", "measured", "p50 s", "p99 s"):
                table.add_column(column)
            table.add_row(str(fresh["items"]), str(fresh["measured"]), f"{fresh['p50']:.1f}", f"{fresh['p99']:.1f}")
            console.print(table)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
