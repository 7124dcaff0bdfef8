"""Batch vision with Ray Data: a folder of images in, one Parquet row per image out (detections + an embedding).

    python -m ingestion images FOLDER --model PATH --out images.parquet [--query "a cat" ...] [--actors N]

Files are read by Ray Data (`read_binary_files`), then an actor pool of `DetectAndEmbed` workers, each holding
one detection engine (the same `OwlViTEngine` the Detection deployment serves, fractional GPU on a cluster),
decodes a batch, runs one detection pass and one embedding pass over it, and writes rows: path, width, height,
labels, scores, boxes (x_min, y_min, x_max, y_max per detection), embedding (the detector's CLIP-style image
embedding, unit length) and error. A file that is not a readable image gets its error in that column and empty
results: one bad file never stops the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from almquist.config import DetectionConfig
from almquist.errors import AlmquistError
from almquist.images import decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class ImageBatchReport:
    """What a run did."""

    images: int
    failed: int
    detections: int
    output: str


class DetectAndEmbed:
    """A Ray Data actor: a batch of image files in (`bytes`, `path`), detections and embeddings out."""

    def __init__(self, config: DetectionConfig, queries: list[str], engine_cls: type | None = None) -> None:
        from deployments.detection import OwlViTEngine

        self._config = config
        self._queries = list(queries)
        self._engine = (engine_cls or OwlViTEngine)(config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        images, good = [], []
        for data, path in zip(batch["bytes"], batch["path"], strict=True):
            try:
                images.append(decode_image(bytes(data), "", self._config.images))
                good.append(len(rows))
                rows.append({"path": path, "error": ""})
            except AlmquistError as error:
                rows.append({"path": path, "error": error.message})
        found = self._engine.detect_batch(
            images, [self._queries] * len(images), [self._config.score_threshold] * len(images)
        )
        vectors = self._engine.image_embeddings(images) if images else np.zeros((0, 0), np.float32)
        for slot, image, detections, vector in zip(good, images, found, vectors, strict=True):
            rows[slot] |= {
                "width": image.width,
                "height": image.height,
                "labels": [d.label for d in detections],
                "scores": [float(d.score) for d in detections],
                "boxes": [[float(v) for v in d.box] for d in detections],
                "embedding": np.asarray(vector, dtype=np.float32).tolist(),
            }
        empty = {"width": 0, "height": 0, "labels": [], "scores": [], "boxes": [], "embedding": []}
        rows = [{**empty, **row} for row in rows]
        return {key: [row[key] for row in rows] for key in ("path", *empty, "error")}


def image_files(folder: str | Path) -> list[str]:
    """The image files under `folder` (by suffix, recursively), sorted; FileNotFoundError when there are none."""
    files = sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def run(
    folder: str | Path,
    out: str | Path,
    config: DetectionConfig,
    queries: list[str] | None = None,
    actors: int = 1,
    batch_size: int = 8,
    num_gpus: float = 0.0,
    engine_cls: type | None = None,
    num_cpus: float = 1.0,
) -> ImageBatchReport:
    """Detects and embeds every image under `folder`; writes Parquet to `out` (a folder, Ray Data's layout)."""
    from ray.data import ActorPoolStrategy

    files = image_files(folder)
    dataset = ray.data.read_binary_files(files, include_paths=True).map_batches(
        DetectAndEmbed,
        fn_constructor_kwargs={
            "config": config,
            "queries": list(queries or config.scene_queries),
            "engine_cls": engine_cls,
        },
        compute=ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    dataset.write_parquet(str(out))
    table = ray.data.read_parquet(str(out), columns=["error", "labels"]).to_pandas()  # the report's columns only
    failed = int((table["error"] != "").sum())
    detections = int(table["labels"].map(len).sum())
    return ImageBatchReport(images=len(table), failed=failed, detections=detections, output=str(out))
