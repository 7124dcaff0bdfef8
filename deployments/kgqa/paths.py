"""Relation paths over the movie graph: which relations a question walks, in which direction, from which label.

In: a MetaQA question type (`director_to_movie_to_language`) or a path key (`Person|directed_by:in|in_language:out`).
Out: a `RelationPath`. Every MetaQA relation points Movie -> X, so a hop is `(relation, "out")` from a movie to
its X, or `(relation, "in")` from an X back to its movies. The qtype names are only training labels: at answer
time the path comes from the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from almquist.stores.schema import METAQA_RELATIONS

Direction = Literal["out", "in"]
Hop = tuple[str, Direction]
MOVIE = "Movie"

# MetaQA relation -> (source label, target label)
RELATION_LABELS: dict[str, tuple[str, str]] = {rel: (src, dst) for rel, (_, src, dst) in METAQA_RELATIONS.items()}

# The words of MetaQA's question types, each the relation that links a movie to it.
QTYPE_WORDS: dict[str, str] = {
    "actor": "starred_actors",
    "director": "directed_by",
    "writer": "written_by",
    "year": "release_year",
    "language": "in_language",
    "tag": "has_tags",
    "tags": "has_tags",
    "genre": "has_genre",
    "imdbvotes": "has_imdb_votes",
    "imdbrating": "has_imdb_rating",
}


@dataclass(frozen=True)
class RelationPath:
    """A walk from a node labelled `start` through `hops`; `labels` are the node labels along it."""

    start: str
    hops: tuple[Hop, ...]

    def __post_init__(self) -> None:
        label = self.start
        for relation, direction in self.hops:
            if relation not in RELATION_LABELS:
                raise ValueError(f"unknown relation {relation!r} in path")
            src, dst = RELATION_LABELS[relation]
            here, there = (src, dst) if direction == "out" else (dst, src)
            if direction not in ("out", "in") or label != here:
                raise ValueError(f"hop ({relation}, {direction}) cannot leave a {label} node")
            label = there

    @property
    def labels(self) -> tuple[str, ...]:
        labels = [self.start]
        for relation, direction in self.hops:
            src, dst = RELATION_LABELS[relation]
            labels.append(dst if direction == "out" else src)
        return tuple(labels)

    @property
    def end(self) -> str:
        return self.labels[-1]

    def key(self) -> str:
        """A stable text form, `Start|rel:dir|...`, used as the classifier's label and in saved models."""
        return "|".join([self.start, *(f"{relation}:{direction}" for relation, direction in self.hops)])

    @classmethod
    def from_key(cls, key: str) -> RelationPath:
        start, *parts = key.split("|")
        hops: list[Hop] = []
        for part in parts:
            relation, _, direction = part.partition(":")
            if direction not in ("out", "in"):
                raise ValueError(f"bad hop {part!r} in path key {key!r}")
            hops.append((relation, direction))  # type: ignore[arg-type]
        return cls(start, tuple(hops))

    def __str__(self) -> str:
        return self.key()


def path_from_qtype(qtype: str) -> RelationPath:
    """`actor_to_movie_to_year` -> Person -(starred_actors, in)-> Movie -(release_year, out)-> Year."""
    words = qtype.split("_to_")
    if len(words) < 2 or any(w != "movie" and w not in QTYPE_WORDS for w in words):
        raise ValueError(f"not a MetaQA question type: {qtype!r}")
    hops: list[Hop] = []
    for here, there in pairwise(words):
        if (here == "movie") == (there == "movie"):
            raise ValueError(f"{qtype!r}: every hop joins a movie and a non-movie")
        hops.append((QTYPE_WORDS[there], "out") if here == "movie" else (QTYPE_WORDS[here], "in"))
    start = MOVIE if words[0] == "movie" else RELATION_LABELS[QTYPE_WORDS[words[0]]][1]
    return RelationPath(start, tuple(hops))
