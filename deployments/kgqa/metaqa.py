"""MetaQA question files and the deterministic train/validation split of the dev questions.

In: a MetaQA folder (`{1,2,3}-hop/qa_dev.txt` with `qa_dev_qtype.txt` beside it). Out: `MetaQAQuestion`s and
`split_of(text)`: "train" or "validation" from a hash of the question text, so every run, machine and process
draws the same split, and a question that appears twice lands on the same side. `write_triples` loads kb.txt's
triples into a GraphStore.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from almquist.stores.graph import GraphStore
from almquist.stores.schema import METAQA_RELATIONS, node_id
from almquist.stores.snapshot import Snapshot

VALIDATION_SHARE = 0.3
BRACKETED = re.compile(r"\[([^\]]+)\]")
Split = Literal["train", "validation"]


@dataclass(frozen=True)
class MetaQAQuestion:
    text: str
    answers: tuple[str, ...]
    hops: int
    qtype: str | None

    @property
    def mention(self) -> str | None:
        match = BRACKETED.search(self.text)
        return match.group(1) if match else None


def split_of(text: str, validation_share: float = VALIDATION_SHARE) -> Split:
    bucket = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2**64
    return "validation" if bucket < validation_share else "train"


def read_questions(
    folder: str | Path, hops: int, file: str = "qa_dev.txt", split: Split | None = None
) -> list[MetaQAQuestion]:
    """`folder/{hops}-hop/{file}`, with the qtype of each line when `{stem}_qtype.txt` is beside it."""
    path = Path(folder) / f"{hops}-hop" / file
    qtype_path = path.with_name(f"{path.stem}_qtype.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    qtypes: list[str | None] = [None] * len(lines)
    if qtype_path.exists():
        qtypes = list(qtype_path.read_text(encoding="utf-8").splitlines())
    if len(qtypes) != len(lines):
        raise ValueError(f"{qtype_path} has {len(qtypes)} lines, {path} has {len(lines)}")
    questions = []
    for line, qtype in zip(lines, qtypes, strict=True):
        text, _, answers = line.partition("\t")
        if split is None or split_of(text) == split:
            questions.append(MetaQAQuestion(text, tuple(a for a in answers.split("|") if a), hops, qtype))
    return questions


def write_triples(store: GraphStore, triples: Sequence[tuple[str, str, str]], snapshot: Snapshot) -> int:
    """Writes MetaQA triples into a GraphStore (nodes per label, then edges per relation); returns edges created."""
    nodes: dict[str, dict[str, None]] = {}
    edges: dict[str, list[dict[str, str]]] = {}
    for head, relation, tail in triples:
        _, src_label, dst_label = METAQA_RELATIONS[relation]
        nodes.setdefault(src_label, {})[head] = None
        nodes.setdefault(dst_label, {})[tail] = None
        edges.setdefault(relation, []).append({"src": node_id(src_label, head), "dst": node_id(dst_label, tail)})
    for label, names in nodes.items():
        store.upsert_nodes(label, [{"name": name} for name in names], snapshot)
    created = 0
    for relation, rows in edges.items():
        rel_type, src_label, dst_label = METAQA_RELATIONS[relation]
        created += store.upsert_edges(rel_type, src_label, dst_label, rows, snapshot)
    return created
