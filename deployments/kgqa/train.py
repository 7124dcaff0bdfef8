"""Trains the KGQA relation-path classifier on the train split of MetaQA's dev questions and saves it.

Run: `python -m deployments.kgqa.train [--metaqa DIR] [--out DIR] [--hops 1,2,3] [--c 100] [--if-missing]` (what
`almquist kb train` runs; it lives beside the family it trains). `--metaqa` defaults to `$ALMQUIST_DATA_DIR/metaqa`
(`shared/data/metaqa` beside the checkout), `--out` to where Graph-RAG loads it from.
In: `{1,2,3}-hop/qa_dev.txt` and `qa_dev_qtype.txt` (the qtype is the training label: it names the relation path).
Out: `DIR/coef.npy`, `DIR/intercept.npy`, `DIR/meta.json` (deployments/kgqa/classifier.py reads them), and a table
with the split sizes, the path accuracy on the validation split, the training time and the model's size.
The split is `metaqa.split_of` (a hash of the question text), so the benchmark's validation questions are never
trained on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from almquist.config import data_dir, default_cache_dir

from .classifier import PathClassifier
from .embedder import Embed, minilm_embedder
from .metaqa import MetaQAQuestion, read_questions
from .paths import path_from_qtype


@dataclass
class TrainReport:
    train_questions: int
    validation_questions: int
    paths: int
    validation_accuracy: float
    train_seconds: float
    model_bytes: int
    out: Path


def labelled(questions: Sequence[MetaQAQuestion]) -> list[MetaQAQuestion]:
    """Questions that carry a qtype (the label)."""
    return [q for q in questions if q.qtype]


def train(
    metaqa: str | Path,
    out: str | Path,
    *,
    hops: Sequence[int] = (1, 2, 3),
    c: float = 100.0,
    embed: Embed | None = None,
    per_path_limit: int | None = None,
    validation_per_path_limit: int | None = None,
    int8: bool = True,
    threads: int | None = None,
    console: Console | None = None,
) -> TrainReport:
    """Fits on the train split (at most `per_path_limit` questions per path, in file order), measures the path
    accuracy on the validation split (at most `validation_per_path_limit` per path) and saves to `out`."""
    console = console or Console()
    train_qs = labelled([q for h in hops for q in read_questions(metaqa, h, split="train")])
    validation = labelled([q for h in hops for q in read_questions(metaqa, h, split="validation")])
    if per_path_limit is not None:
        train_qs = first_per_label(train_qs, per_path_limit)
    if validation_per_path_limit is not None:
        validation = first_per_label(validation, validation_per_path_limit)
    classifier = PathClassifier(embed or minilm_embedder(int8=int8, threads=threads))
    start = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("embedding masked questions", total=None)
        classifier.fit(
            [q.text for q in train_qs],
            [path_from_qtype(q.qtype or "") for q in train_qs],
            c=c,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    seconds = time.perf_counter() - start
    predicted = classifier.predict_many([q.text for q in validation])
    gold = [path_from_qtype(q.qtype or "") for q in validation]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / max(1, len(validation))
    folder = classifier.save(out)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return TrainReport(len(train_qs), len(validation), len(classifier.labels), accuracy, seconds, size, folder)


def first_per_label(questions: Sequence[MetaQAQuestion], limit: int) -> list[MetaQAQuestion]:
    """The first `limit` questions of each qtype, in the given order."""
    seen: dict[str | None, int] = {}
    kept = []
    for question in questions:
        seen[question.qtype] = seen.get(question.qtype, 0) + 1
        if seen[question.qtype] <= limit:
            kept.append(question)
    return kept


def main(argv: Sequence[str] | None = None) -> TrainReport | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = data_dir()
    parser.add_argument("--metaqa", type=Path, default=data / "metaqa", help="MetaQA folder with {1,2,3}-hop/")
    parser.add_argument("--out", type=Path, default=default_cache_dir() / "kb" / "kgqa", help="where to save the model")
    parser.add_argument("--hops", default="1,2,3", help="comma-separated hop counts to train on")
    parser.add_argument("--c", type=float, default=100.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--per-path-limit", type=int, default=None, help="at most this many questions per path")
    parser.add_argument("--fp32", action="store_true", help="full-precision MiniLM (default: int8, ~2x faster)")
    parser.add_argument("--torch-threads", type=int, default=1, help="one text at a time gains nothing from more")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when OUT already holds a model")
    args = parser.parse_args(argv)
    console = Console(width=120)
    if args.if_missing and (args.out / "meta.json").exists():
        console.print(f"a model is already at {args.out}: nothing to train (drop --if-missing to retrain)")
        return None
    report = train(
        args.metaqa,
        args.out,
        hops=[int(h) for h in args.hops.split(",")],
        c=args.c,
        per_path_limit=args.per_path_limit,
        int8=not args.fp32,
        threads=args.torch_threads,
        console=console,
    )
    embedder = PathClassifier.read_meta(report.out).get("embedder")
    table = Table(title=f"KGQA relation-path classifier: logistic regression over {embedder}")
    for column in ("train questions", "validation questions", "paths", "validation path accuracy", "train s", "size"):
        table.add_column(column, justify="right")
    table.add_row(
        str(report.train_questions),
        str(report.validation_questions),
        str(report.paths),
        f"{report.validation_accuracy:.2%}",
        f"{report.train_seconds:.1f}",
        f"{report.model_bytes / 1024:.0f} KiB",
    )
    console.print(table)
    console.print(f"saved to {report.out}")
    return report


if __name__ == "__main__":
    main()
