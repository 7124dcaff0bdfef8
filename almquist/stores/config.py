"""Typed configuration of the knowledge stores: where the graph and the vectors live, and how ingestion batches.

Embedded by default (a ladybug folder and a Qdrant local folder under the cache dir), servers by URL. Secrets are
never in config: `password_env` / `api_key_env` name the environment variables that hold them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from almquist.config import EmbeddingsConfig, default_cache_dir


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GraphStoreConfig(_Strict):
    """The graph: `ladybug` (embedded folder at `path`) or `neo4j` (a server at `uri`)."""

    backend: Literal["ladybug", "neo4j"] = "ladybug"
    path: Path = Field(default_factory=lambda: default_cache_dir() / "kb" / "graph")
    uri: str = "bolt://localhost:7687"
    user: str = "neo4j"
    password_env: str | None = Field("NEO4J_PASSWORD", description="Env var holding the Neo4j password.")
    database: str | None = Field(None, description="Neo4j database name; None uses the server's default.")
    buffer_pool_mb: int = Field(1024, gt=0, description="ladybug's page cache (it defaults to 80% of RAM).")
    threads: int = Field(0, ge=0, description="ladybug query threads; 0 lets it use every core.")


class VectorStoreConfig(_Strict):
    """Qdrant: local mode in the folder `path`, or a server at `url` (the same client API either way)."""

    path: Path = Field(default_factory=lambda: default_cache_dir() / "kb" / "qdrant")
    url: str | None = None
    api_key_env: str | None = Field(None, description="Env var holding the Qdrant API key, if the server needs one.")
    collection: str = "entities"
    timeout_s: float = Field(30.0, gt=0)


class KnowledgeConfig(_Strict):
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

    def embed_actor_options(self) -> dict[str, object]:
        """Ray resources of one embedding actor (the pipelines' pools and the scheduler's warm one)."""
        resources = dict(self.embed_resources)
        return {"num_cpus": self.embed_num_cpus, "num_gpus": self.embed_num_gpus, "resources": resources}
