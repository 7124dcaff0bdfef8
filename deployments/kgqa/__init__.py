"""The KGQA family: question answering over the movie knowledge graph (MetaQA-style, 1-3 hops), without the LLM.

question -> `linker` (which node) -> `classifier` (which relation path; the embeddings family's traced MiniLM
embedding of the question with the mention masked + logistic regression) -> `answer.KGQA` (walks the path through
the GraphStore's named queries) -> `KGQAResult` (ranked answers, supporting facts, linked ids, path, confidence,
or a reason when there is none). `engine` holds the protocol every engine follows and the result types. A library,
not a Serve deployment: GraphRAG runs engines in its replica (`answer.load_engine` by default). The in-memory graph
that tests and the benchmark walk is a GraphStore backend, `almquist.stores.memory_store.InMemoryGraphStore`.
Train with `python -m deployments.kgqa.train` (`almquist kb train`), measure with `python -m benchmarks.metaqa`.
"""

from .answer import KGQA, load_engine
from .classifier import PathClassifier
from .engine import EngineLoader, Fact, KGQAEngine, KGQAResult
from .linker import EntityLinker, LinkedEntity, Linking
from .paths import RelationPath, path_from_qtype

__all__ = [
    "KGQA",
    "EngineLoader",
    "EntityLinker",
    "Fact",
    "KGQAEngine",
    "KGQAResult",
    "LinkedEntity",
    "Linking",
    "PathClassifier",
    "RelationPath",
    "load_engine",
    "path_from_qtype",
]
