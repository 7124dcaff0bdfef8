"""Question answering over the movie knowledge graph (MetaQA-style, 1-3 hops), without the LLM.

question -> `linker` (which node) -> `classifier` (which relation path; MiniLM embedding of the question with the
mention masked + logistic regression) -> `answer.KGQA` (walks the path through the GraphStore's named queries) ->
`KGQAResult` (ranked answers, supporting facts, linked ids, path, confidence, or a reason when there is none).
`memory.InMemoryGraph` answers the same named queries from kb.txt triples: the test double and reference.
Train with `python -m graphs.kgqa.train`, measure with `python -m benchmarks.metaqa`.
"""

from .answer import KGQA, Fact, KGQAResult
from .classifier import PathClassifier
from .linker import EntityLinker, LinkedEntity, Linking
from .memory import InMemoryGraph
from .paths import RelationPath, path_from_qtype

__all__ = [
    "KGQA",
    "EntityLinker",
    "Fact",
    "InMemoryGraph",
    "KGQAResult",
    "LinkedEntity",
    "Linking",
    "PathClassifier",
    "RelationPath",
    "path_from_qtype",
]
