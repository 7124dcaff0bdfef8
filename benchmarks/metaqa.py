"""MetaQA benchmark of the KGQA engine: Hits@1 per hop next to the KB's ceilings, and retrieval latency.

Run: `python -m benchmarks.metaqa --questions ../shared/data/metaqa --hops 1,2,3 [--limit N] [--model DIR]
[--stores memory,ladybug] [--file qa_dev.txt] [--split validation|all]`.

Accuracy: the validation split of `qa_dev.txt` (`deployments.kgqa.metaqa.split_of`; the classifier never trained on
it), or all of a file never used in training (`--file qa_test.txt --split all`). Hits@1 = the first answer is a
gold answer (scored by `benchmarks.kgqa_evaluate`, as in the tests and notebooks/metaqa_eval.ipynb). Next to it: the
reachability ceiling (a gold answer within k hops of the topic entity over any relation, either direction) and
the gold-path ceiling (a gold answer at the end of the qtype's own path).
Latency: one question at a time, question -> answer set (linking, embedding, path, graph walk; no LLM), on the
full KB and on a synthetic scale-up (renamed copies of every movie, person and tag until `--scale-entities`).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from almquist.config import default_cache_dir
from almquist.stores.graph import QueryRunner
from almquist.stores.memory_store import InMemoryGraphStore, Triple, read_kb
from almquist.stores.schema import METAQA_RELATIONS
from almquist.stores.snapshot import Snapshot
from benchmarks.kgqa_evaluate import HopScore, evaluate, gold_path_reaches
from deployments.kgqa.answer import KGQA
from deployments.kgqa.classifier import PathClassifier
from deployments.kgqa.embedder import minilm_embedder
from deployments.kgqa.linker import EntityLinker
from deployments.kgqa.metaqa import MetaQAQuestion, read_questions, write_triples

console = Console(width=160)
SHARED_LABELS = ("Year", "Language", "Genre", "Votes", "Rating")  # values, not things: copies share them


# ---- ceilings ----
def undirected_adjacency(triples: Iterable[Triple]) -> dict[str, set[str]]:
    """Entity name -> neighbour names over every relation, both directions (MetaQA's string-level entities)."""
    adjacency: dict[str, set[str]] = defaultdict(set)
    for head, _, tail in triples:
        adjacency[head].add(tail)
        adjacency[tail].add(head)
    return adjacency


def within_hops(adjacency: dict[str, set[str]], source: str, targets: set[str], k: int) -> bool:
    """Whether some target is at most k hops from source: bidirectional BFS, expanding the cheaper frontier."""
    if source in targets:
        return True
    seen_a, seen_b = {source}, set(targets) & adjacency.keys()
    front_a, front_b = set(seen_a), set(seen_b)
    steps = 0
    while steps < k and front_a and front_b:
        grow_a = sum(len(adjacency[n]) for n in front_a) <= sum(len(adjacency[n]) for n in front_b)
        front, seen, other = (front_a, seen_a, seen_b) if grow_a else (front_b, seen_b, seen_a)
        nxt = {m for n in front for m in adjacency[n]} - seen
        if nxt & other:
            return True
        seen |= nxt
        if grow_a:
            front_a = nxt
        else:
            front_b = nxt
        steps += 1
    return False


# ---- latency ----
def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    values = np.array(samples) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def time_questions(engine: KGQA, questions: Sequence[MetaQAQuestion], warmup: int = 20) -> dict[str, list[float]]:
    """Seconds per question: `total` (question -> answers), `embed` (mask + embed + classify), `graph` (the rest)."""
    for question in questions[:warmup]:
        engine.answer(question.text)
    times: dict[str, list[float]] = {"total": [], "embed": [], "graph": []}
    for question in questions:
        start = time.perf_counter()
        engine.answer(question.text)
        total = time.perf_counter() - start
        linking = engine.link(question.text)
        start = time.perf_counter()
        engine.classifier.rank(engine.masked(question.text, linking))
        embed = time.perf_counter() - start
        times["total"].append(total)
        times["embed"].append(embed)
        times["graph"].append(max(0.0, total - embed))
    return times


def scaled_triples(triples: Sequence[Triple], target_entities: int) -> tuple[list[Triple], int]:
    """The KB plus renamed copies (`Name ~i`) of every movie, person and tag, sharing the years, languages,
    genres and ratings, until there are `target_entities` entities; returns the triples and the entity count."""
    base = InMemoryGraphStore(triples)
    shared = sum(1 for _, _, label in base.entities() if label in SHARED_LABELS)
    per_copy = max(1, len(base) - shared)
    copies = max(0, -(-(target_entities - len(base)) // per_copy))
    out = list(triples)
    for i in range(1, copies + 1):
        for head, relation, tail in triples:
            keep = METAQA_RELATIONS[relation][2] in SHARED_LABELS
            out.append((f"{head} ~{i}", relation, tail if keep else f"{tail} ~{i}"))
    return out, len(base) + copies * per_copy


# ---- stores ----
def ladybug_store(triples: Sequence[Triple], folder: Path) -> QueryRunner:
    from almquist.config.knowledge import GraphStoreConfig
    from almquist.stores.factory import open_graph_store

    store = open_graph_store(GraphStoreConfig(path=folder / "graph", buffer_pool_mb=1024))
    write_triples(store, triples, Snapshot("metaqa-kb", 1, "kb.txt", time.time()))
    return store


def engine_for(store: QueryRunner, classifier: PathClassifier) -> KGQA:
    return KGQA(store, classifier, EntityLinker.from_store(store))


def timed(label: str, build: Callable[[], QueryRunner]) -> QueryRunner:
    start = time.perf_counter()
    with console.status(f"building {label}"):
        store = build()
    console.print(f"built {label} in {time.perf_counter() - start:.1f}s")
    return store


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", required=True, type=Path, help="MetaQA folder with {k}-hop/ and kb.txt")
    parser.add_argument("--hops", default="1,2,3")
    parser.add_argument("--limit", type=int, default=None, help="at most N questions per hop (accuracy)")
    parser.add_argument("--model", type=Path, default=default_cache_dir() / "kb" / "kgqa")
    parser.add_argument("--kb", type=Path, default=None, help="default: QUESTIONS/kb.txt")
    parser.add_argument("--file", default="qa_dev.txt")
    parser.add_argument("--split", choices=["validation", "all"], default=None, help="default: validation for qa_dev")
    parser.add_argument("--stores", default="memory,ladybug", help="memory and/or ladybug")
    parser.add_argument("--latency-questions", type=int, default=300)
    parser.add_argument("--scale-entities", type=int, default=100_000, help="0 skips the scale-up")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args(argv)

    hops = [int(h) for h in args.hops.split(",")]
    split = args.split or ("validation" if args.file == "qa_dev.txt" else "all")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not (args.model / "meta.json").exists():
        parser.error(f"no model at {args.model}: train one with python -m deployments.kgqa.train --out {args.model}")
    trained_with = str(PathClassifier.read_meta(args.model).get("embedder") or "")
    embed = minilm_embedder(int8=not trained_with.endswith("/fp32"), threads=args.torch_threads)
    classifier = PathClassifier.load(args.model, embed)
    triples = read_kb(args.kb or args.questions / "kb.txt")
    questions = {
        h: read_questions(args.questions, h, args.file, split=None if split == "all" else "validation")[: args.limit]
        for h in hops
    }
    tmp = Path(tempfile.mkdtemp(prefix="metaqa-bench-"))
    try:
        built: dict[str, QueryRunner] = {"memory": timed("in-memory graph", lambda: InMemoryGraphStore(triples))}
        if "ladybug" in stores:
            built["ladybug"] = timed("ladybug store", lambda: ladybug_store(triples, tmp / "full"))
        accuracy_table(built, classifier, questions, triples, split, args.file)
        latency_table(built, classifier, questions, triples, stores, args, tmp)
    finally:
        for store in built.values():
            getattr(store, "close", lambda: None)()
        shutil.rmtree(tmp, ignore_errors=True)


def accuracy_table(
    built: dict[str, QueryRunner],
    classifier: PathClassifier,
    questions: dict[int, list[MetaQAQuestion]],
    triples: Sequence[Triple],
    split: str,
    file: str,
) -> None:
    adjacency = undirected_adjacency(triples)
    table = Table(title=f"MetaQA Hits@1 ({file}, {split} questions; ceilings computed on the same questions)")
    table.add_column("hops", justify="right")
    table.add_column("questions", justify="right")
    for name in built:
        table.add_column(f"Hits@1 {name}", justify="right")
    for column in ("reachability ceiling", "gold-path ceiling", "path accuracy", "no answer", "agree"):
        table.add_column(column, justify="right")
    for hop, qs in questions.items():
        scores: dict[str, HopScore] = {}
        for name, store in built.items():
            with console.status(f"{hop}-hop on {name}"):
                scores[name] = evaluate(engine_for(store, classifier), qs)
        reach = sum(within_hops(adjacency, q.mention or "", set(q.answers), hop) for q in qs)
        gold_path = sum(gold_path_reaches(built["memory"], q) for q in qs)
        first = scores["memory"]
        agree = all(s.answers == first.answers for s in scores.values())
        n = max(1, len(qs))
        table.add_row(
            str(hop),
            str(len(qs)),
            *(f"{s.hits / n:.2%}" for s in scores.values()),
            f"{reach / n:.2%}",
            f"{gold_path / n:.2%}",
            f"{first.path_correct / n:.2%}",
            f"{first.empty / n:.2%}",
            "yes" if agree else "NO",
        )
    console.print(table)


def latency_table(
    built: dict[str, QueryRunner],
    classifier: PathClassifier,
    questions: dict[int, list[MetaQAQuestion]],
    triples: Sequence[Triple],
    stores: list[str],
    args: argparse.Namespace,
    tmp: Path,
) -> None:
    pool = [q for qs in questions.values() for q in qs]
    sample = random.Random(0).sample(pool, min(args.latency_questions, len(pool)))
    full_entities = len(InMemoryGraphStore(triples))
    runs = [(name, "full KB", full_entities, store) for name, store in built.items()]
    if args.scale_entities:
        big, entities = scaled_triples(triples, args.scale_entities)
        kb = f"scaled x{len(big) // len(triples)}"
        runs.append(("memory", kb, entities, timed("scaled in-memory graph", lambda: InMemoryGraphStore(big))))
        if "ladybug" in stores:
            runs.append(("ladybug", kb, entities, timed("scaled ladybug store", lambda: ladybug_store(big, tmp / "s"))))
    table = Table(title=f"Latency, question -> answer set, one at a time ({len(sample)} questions; no LLM)")
    for column in ("store", "KB", "entities", "p50 ms", "p99 ms", "embed+classify p50", "link+walk p50", "load avg"):
        table.add_column(column, justify="right")
    for name, kb, entities, store in runs:
        engine = engine_for(store, classifier)
        with console.status(f"latency on {name} {kb}"):
            times = time_questions(engine, sample)
        p50, p99 = percentiles(times["total"])
        table.add_row(
            name,
            kb,
            f"{entities:,}",
            f"{p50:.2f}",
            f"{p99:.2f}",
            f"{statistics.median(times['embed']) * 1e3:.2f}",
            f"{statistics.median(times['graph']) * 1e3:.2f}",
            f"{os.getloadavg()[0]:.1f}",
        )
        if store not in built.values():
            getattr(store, "close", lambda: None)()
    console.print(table)


if __name__ == "__main__":
    main()
