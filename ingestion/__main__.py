"""`python -m ingestion`: ingest a knowledge source, list snapshots, roll one back.

    python -m ingestion metaqa [--kb PATH] [--limit N] [--batch-size B] [--force]
    python -m ingestion neo4j-movies [--cypher PATH] [--force]
    python -m ingestion snapshots
    python -m ingestion rollback SNAPSHOT_ID
    python -m ingestion stats
    python -m ingestion feeds SOURCES.yaml [--state-dir DIR] [--secrets FILE]   (one poll of each, with progress)
    python -m ingestion feeds-start SOURCES.yaml [...] | feeds-health | feeds-stop   (the FeedScheduler actor)
    python -m ingestion images FOLDER --model PATH --out OUT.parquet [--query Q ...]   (detect + embed, Parquet)
    python -m ingestion transcribe FOLDER --out OUT.parquet [--model REF] [--actors N]   (speech to text, Parquet)

Stores default to the cache dir (`--graph-path`, `--qdrant-path`, or `--qdrant-url` / `--neo4j-uri` for servers;
or `--knowledge JSON`, a Serve profile's `knowledge` args, which is how `almquist up` fills the deployed KB).
Joins a running Ray cluster when RAY_ADDRESS is set, else starts a local one for the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rich.console import Console

from almquist.config.knowledge import GraphStoreConfig, KnowledgeConfig, VectorStoreConfig
from almquist.errors import AlmquistError, InvalidArgument

console = Console(stderr=True)


def _config(args: argparse.Namespace) -> KnowledgeConfig:
    if args.knowledge:  # a profile's `knowledge` args as JSON (what `almquist up` passes): the flags refine it
        base = KnowledgeConfig.model_validate_json(args.knowledge)
        if not (args.neo4j_uri or args.graph_path or args.qdrant_url or args.qdrant_path):
            return base
        raise InvalidArgument("give either --knowledge or the store flags (--graph-path, --neo4j-uri, ...), not both")
    graph: dict = {}
    if args.neo4j_uri:
        graph = {"backend": "neo4j", "uri": args.neo4j_uri}
    elif args.graph_path:
        graph = {"path": Path(args.graph_path)}
    vectors: dict = {"url": args.qdrant_url} if args.qdrant_url else {}
    if args.qdrant_path:
        vectors["path"] = Path(args.qdrant_path)
    batch = {"batch_size": args.batch_size} if getattr(args, "batch_size", None) else {}
    return KnowledgeConfig(graph=GraphStoreConfig(**graph), vectors=VectorStoreConfig(**vectors), **batch)


def _report(report) -> None:
    for error in report.errors:
        console.print(f"[yellow]skipped[/] {error}")
    summary = {k: v for k, v in vars(report).items() if k != "errors"}
    console.print_json(json.dumps({**summary, "errors": len(report.errors)}))


def _feeds_once(args: argparse.Namespace, config: KnowledgeConfig) -> int:
    """Batch mode: every source polled once (conditional on the state folder's cursors), ingested, reported."""
    from rich.progress import Progress
    from rich.table import Table

    from ingestion.feed_scheduler import FeedScheduler
    from ingestion.sources.parse import load_secrets, load_sources

    sources = load_sources(args.sources)
    feeds = FeedScheduler(sources, _state_dir(args), config, secrets=load_secrets(args.secrets))
    with Progress(console=console) as progress:
        task = progress.add_task("polling and ingesting", total=len(sources))
        for source in sources:
            progress.update(task, description=f"{source.name}")
            feeds.poll_once(source.name)
            progress.advance(task)
    table = Table(title=f"sources of {args.sources}")
    for column in ("source", "seen", "stored", "duplicates", "304s", "item errors", "last error"):
        table.add_column(column)
    failed = 0
    for name, health in feeds.health().items():
        failed += bool(health["consecutive_errors"])
        table.add_row(
            name,
            str(health["items_seen"]),
            str(health["items_stored"]),
            str(health["duplicates"]),
            str(health["not_modified"]),
            str(health["item_errors"]),
            health["last_error"][:80] if health["consecutive_errors"] else "",
        )
    Console().print(table)
    pending = feeds.pending_batches()
    if pending:
        console.print(f"[yellow]{len(pending)} batch(es) not ingested yet[/]: run again to retry")
    return 1 if failed == len(sources) or pending else 0


def _state_dir(args: argparse.Namespace) -> Path:
    from almquist.config import default_cache_dir

    return Path(args.state_dir) if args.state_dir else default_cache_dir() / "feeds" / Path(args.sources).stem


def _images(args: argparse.Namespace) -> int:
    import ray

    from almquist.config import DetectionConfig
    from ingestion.images import image_files, run

    try:
        image_files(args.folder)
    except FileNotFoundError as error:
        console.print(f"[red]{error}[/]")
        return 2
    config = DetectionConfig(model=args.model, backend=args.backend, device="cuda" if args.num_gpus else "cpu")
    started = not ray.is_initialized()  # a notebook or test may have started Ray already
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False, logging_level=logging.ERROR)
    try:
        report = run(args.folder, args.out, config, args.query, args.actors, args.batch_size, args.num_gpus)
    finally:
        if started:
            ray.shutdown()
    console.print_json(json.dumps(vars(report)))
    return 1 if report.failed == report.images else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestion", description=__doc__.split("\n")[0])
    parser.add_argument("--knowledge", help="the whole KnowledgeConfig as JSON (a Serve profile's knowledge args)")
    parser.add_argument("--graph-path")
    parser.add_argument("--neo4j-uri")
    parser.add_argument("--qdrant-path")
    parser.add_argument("--qdrant-url")
    sub = parser.add_subparsers(dest="command", required=True)
    metaqa = sub.add_parser("metaqa", help="MetaQA kb.txt")
    metaqa.add_argument("--kb", type=Path)
    metaqa.add_argument("--limit", type=int)
    metaqa.add_argument("--batch-size", type=int)
    metaqa.add_argument("--force", action="store_true", help="ingest again into a new snapshot")
    movies = sub.add_parser("neo4j-movies", help="Neo4j's movies.cypher")
    movies.add_argument("--cypher", type=Path)
    movies.add_argument("--batch-size", type=int)
    movies.add_argument("--force", action="store_true")
    sub.add_parser("snapshots", help="list snapshots")
    rollback = sub.add_parser("rollback", help="remove a snapshot from both stores")
    rollback.add_argument("snapshot_id")
    sub.add_parser("stats", help="entities per label, edges per type, vectors, snapshots")
    for name, text in (("feeds", "poll every source once and ingest (batch mode)"), ("feeds-start", "start polling")):
        feeds = sub.add_parser(name, help=text)
        feeds.add_argument("sources", help="a YAML of sources, or a folder of them (ingestion/sources/examples)")
        feeds.add_argument("--state-dir", help="cursors, health and the inbox (default: the cache dir)")
        feeds.add_argument("--secrets", help="a KEY=value or YAML file of credentials (else the environment)")
    sub.add_parser("feeds-health", help="the running FeedScheduler's per-source health")
    sub.add_parser("feeds-stop", help="stop the running FeedScheduler")
    images = sub.add_parser("images", help="detect + embed a folder of images with an actor pool, to Parquet")
    images.add_argument("folder", type=Path)
    images.add_argument("--model", required=True, help="an OWL-ViT model folder (or id where weights are cached)")
    images.add_argument("--backend", choices=["owlvit", "owlv2"], default="owlvit")
    images.add_argument("--out", type=Path, required=True, help="the Parquet output folder")
    images.add_argument("--query", action="append", help="what to look for (repeatable; default: the scene list)")
    images.add_argument("--actors", type=int, default=1, help="detector actors in the pool")
    images.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    images.add_argument("--num-gpus", type=float, default=0.0, help="GPU fraction per actor (0 on CPU)")
    transcribe = sub.add_parser(
        "transcribe",
        help="transcribe a folder of audio files with an actor pool, to Parquet (--help after FOLDER for options)",
        add_help=False,
        prefix_chars="\0",  # every argument goes through to ingestion.transcribe's own parser
    )
    transcribe.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "images":
        return _images(args)
    if args.command == "transcribe":
        from ingestion.transcribe import main as transcribe_main

        return transcribe_main(args.rest)
    try:
        config = _config(args)
    except (InvalidArgument, ValueError) as error:  # pydantic's ValidationError is a ValueError
        parser.error(str(error))

    import ray

    from actors.knowledge_store import get_knowledge_store

    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False, logging_level=logging.ERROR)
    try:
        if args.command == "metaqa":
            from ingestion.metaqa import ingest_metaqa

            _report(ingest_metaqa(args.kb, config, limit=args.limit, force=args.force))
        elif args.command == "neo4j-movies":
            from ingestion.neo4j_movies import ingest_movies

            _report(ingest_movies(args.cypher, config, force=args.force))
        elif args.command == "snapshots":
            console.print_json(json.dumps(ray.get(get_knowledge_store(config).list_snapshots.remote())))
        elif args.command == "feeds":
            return _feeds_once(args, config)
        elif args.command == "feeds-start":
            from ingestion.feed_scheduler import start_scheduler
            from ingestion.sources.parse import load_secrets, load_sources

            actor = start_scheduler(
                load_sources(args.sources), _state_dir(args), config, secrets=load_secrets(args.secrets)
            )
            console.print_json(json.dumps(ray.get(actor.health.remote())))
        elif args.command in ("feeds-health", "feeds-stop"):
            from ingestion.feed_scheduler import SCHEDULER_NAME, SCHEDULER_NAMESPACE

            try:
                actor = ray.get_actor(SCHEDULER_NAME, namespace=SCHEDULER_NAMESPACE)
            except ValueError:
                console.print("[red]No FeedScheduler is running[/] (start one with feeds-start)")
                return 1
            if args.command == "feeds-stop":
                ray.get(actor.stop.remote())
                ray.kill(actor)
            else:
                console.print_json(json.dumps(ray.get(actor.health.remote())))
        elif args.command == "stats":
            console.print_json(json.dumps(ray.get(get_knowledge_store(config).stats.remote())))
        else:
            console.print_json(json.dumps(ray.get(get_knowledge_store(config).rollback.remote(args.snapshot_id))))
    except AlmquistError as error:
        console.print(f"[red]{type(error).__name__}[/]: {error.message}")
        return 2
    except ray.exceptions.RayTaskError as error:
        from almquist.errors import unwrap

        cause = unwrap(error)
        if isinstance(cause, AlmquistError):
            console.print(f"[red]{type(cause).__name__}[/]: {cause.message}")
            return 2
        raise
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
