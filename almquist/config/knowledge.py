"""Typed configuration of the knowledge side: where the graph and the vectors live and how ingestion batches
(`knowledge:`), graph-RAG's question answering (`kgqa:`) and its answers from real-time items (`news:`).

Embedded by default (a ladybug folder and a Qdrant local folder under the cache dir), servers by URL. Secrets are
never in config: `password_env` / `api_key_env` name the environment variables that hold them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from almquist.config.base import Strict
from almquist.config.embeddings import EmbeddingsConfig
from almquist.config.models import default_cache_dir


class GraphStoreConfig(Strict):
    """The graph: `ladybug` (embedded folder at `path`), `neo4j` (a server at `uri`) or `memory` (dicts in the
    process, kept nowhere: tests and references)."""

    backend: Literal["ladybug", "neo4j", "memory"] = "ladybug"
    path: Path = Field(default_factory=lambda: default_cache_dir() / "kb" / "graph")
    uri: str = "bolt://localhost:7687"
    user: str = "neo4j"
    password_env: str | None = Field("NEO4J_PASSWORD", description="Env var holding the Neo4j password.")
    database: str | None = Field(None, description="Neo4j database name; None uses the server's default.")
    buffer_pool_mb: int = Field(1024, gt=0, description="ladybug's page cache (it defaults to 80% of RAM).")
    threads: int = Field(0, ge=0, description="ladybug query threads; 0 lets it use every core.")


class VectorStoreConfig(Strict):
    """Qdrant: local mode in the folder `path`, or a server at `url` (the same client API either way)."""

    path: Path = Field(default_factory=lambda: default_cache_dir() / "kb" / "qdrant")
    url: str | None = None
    api_key_env: str | None = Field(None, description="Env var holding the Qdrant API key, if the server needs one.")
    collection: str = "entities"
    timeout_s: float = Field(30.0, gt=0)


class KnowledgeConfig(Strict):
    """Both stores, the embedding model used for entity names, and ingestion batching."""

    graph: GraphStoreConfig = Field(default_factory=GraphStoreConfig)
    vectors: VectorStoreConfig = Field(default_factory=VectorStoreConfig)
    # sentence-transformers pays a fixed cost per encode batch: short entity names want big batches (32 -> 128: 3x)
    embeddings: EmbeddingsConfig = Field(default_factory=lambda: EmbeddingsConfig(batch_size=128))
    batch_size: int = Field(2000, gt=0, description="Source lines per ingestion batch (the checkpoint unit).")
    embed_actors: int = Field(1, gt=0, description="Embedding actors in the ingestion pipeline's pool.")
    embed_num_cpus: float = Field(1.0, gt=0, description="CPUs each embedding actor reserves.")
    embed_num_gpus: float = Field(0.0, ge=0, le=1, description="GPU fraction each embedding actor reserves (cluster).")
    embed_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom resources of each embedding actor (a node-type pin on a cluster)."
    )

    def embed_actor_options(self) -> dict[str, Any]:
        """Ray resources of one embedding actor (the pipelines' pools and the scheduler's warm one)."""
        resources = dict(self.embed_resources)
        return {"num_cpus": self.embed_num_cpus, "num_gpus": self.embed_num_gpus, "resources": resources}


class KGQAConfig(Strict):
    """Graph-RAG's question answering: the trained relation-path model and answer limits."""

    model_dir: Path = Field(default_factory=lambda: default_cache_dir() / "kb" / "kgqa")
    max_answers: int = Field(20, gt=0)
    cited_answers: int = Field(5, gt=0, description="Facts sent as citations and given to the LLM.")
    # Below this the engine would answer a different question than the one asked (e.g. co-actors' directors when
    # the director path has no facts); saying "not found" is better.
    min_path_probability: float = Field(0.25, ge=0, le=1)
    max_question_chars: int = Field(1000, gt=0)


DEFAULT_HALF_LIVES_HOURS: dict[str, float] = {"news": 24.0, "sports": 12.0, "weather": 3.0, "stocks": 1.0}


class NewsConfig(Strict):
    """Graph-RAG's answers from real-time items (graphs/news.py): how relevance and recency mix, and how much is
    cited. An item's rank is `similarity * (recency_floor + (1 - recency_floor) * 0.5 ** (age_h / half_life))`:
    recency is preferred, but a stale item keeps `recency_floor` of its similarity, so the most relevant item still
    answers when nothing fresh is about the question."""

    half_life_hours: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_HALF_LIVES_HOURS),
        description="Per category: hours after which an item counts half (a quote ages faster than an article).",
    )
    default_half_life_hours: float = Field(24.0, gt=0, description="For categories not in `half_life_hours`.")
    recency_floor: float = Field(0.2, ge=0, le=1, description="Share of its similarity a very old item keeps.")
    # MiniLM cosine: a question and an item about its subject are ~0.5-0.85, unrelated items ~-0.1-0.25.
    min_similarity: float = Field(0.3, ge=-1, le=1, description="Items less similar are noise, however fresh.")
    similarity_margin: float = Field(
        0.2, ge=0, description="Items less similar than the best one by more than this are about something else."
    )
    category_boost: float = Field(
        1.25, ge=1, description="Rank factor for items of the category the question hints at (score -> sports)."
    )
    recent_window_hours: float = Field(
        72.0, gt=0, description="Questions naming no subject ('what's new?') look at items this recent only."
    )
    cited_items: int = Field(5, gt=0, description="Items cited and given to the LLM.")
    candidates_per_citation: int = Field(4, gt=0, description="Chunks asked of the store per cited item.")
    max_snippet_chars: int = Field(500, gt=0, description="Longest item text quoted to the LLM and in a citation.")

    @field_validator("half_life_hours")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: hours for name, hours in value.items() if hours <= 0}
        if bad:
            raise ValueError(f"half-lives must be positive hours (not {bad})")
        return value
