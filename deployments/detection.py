"""Zero-shot object detection: OWL-ViT (or OWLv2) through transformers, loaded from a path in the config.

In (by handle): `detect(image, mime_type, queries, score_threshold)` with encoded image bytes and free-text
queries ("a cat", "a red cup"); `embed_images([(bytes, mime_type), ...])`. Out: a list of `Detection` (label = the
query, score, box in pixels of the input image), best first after per-label NMS; a float32 array of unit-length
CLIP-style image embeddings, one row per image. Concurrent `detect` calls on a replica share one forward pass
(`serve.batch`). The engine is injected like the LLM's; Ray Data's image job (ingestion/images.py) drives the
same `OwlViTEngine` directly through `detect_batch` and `image_embeddings`.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image
from ray import serve

from almquist.config import DetectionConfig, model_name, resolve_model_ref
from almquist.errors import AlmquistError, InvalidArgument, ResourceExhausted
from almquist.images import decode_image


@dataclass(frozen=True)
class Detection:
    """One object found: the query it answers, the detector's score in [0, 1], and its box
    (x_min, y_min, x_max, y_max) in pixels of the input image."""

    label: str
    score: float
    box: tuple[float, float, float, float]


class DetectionEngine(Protocol):
    name: str
    dimensions: int

    def __init__(self, config: DetectionConfig) -> None: ...

    def detect_batch(
        self, images: list[Image.Image], queries: list[list[str]], thresholds: list[float]
    ) -> list[list[Detection]]: ...

    def image_embeddings(self, images: list[Image.Image]) -> np.ndarray: ...


class OwlViTEngine:
    """`OwlViTForObjectDetection` + `OwlViTProcessor` (or the OWLv2 pair) from `config.model`, in eval mode."""

    def __init__(self, config: DetectionConfig) -> None:
        import torch
        from transformers import Owlv2ForObjectDetection, Owlv2Processor, OwlViTForObjectDetection, OwlViTProcessor

        self._config = config
        path = resolve_model_ref(config.model)
        model_cls: type[Owlv2ForObjectDetection | OwlViTForObjectDetection]
        processor_cls: type[Owlv2Processor | OwlViTProcessor]
        if config.backend == "owlv2":
            model_cls, processor_cls = Owlv2ForObjectDetection, Owlv2Processor
        else:
            model_cls, processor_cls = OwlViTForObjectDetection, OwlViTProcessor
        self._dtype = getattr(torch, config.dtype)
        self._device = torch.device(config.device)
        self._processor = processor_cls.from_pretrained(path, local_files_only=True)
        model = model_cls.from_pretrained(path, local_files_only=True, dtype=self._dtype)
        # transformers wraps PreTrainedModel.to in functools.wraps, which hides its bound self from mypy
        self._model = model.to(self._device).eval()  # type: ignore[arg-type]
        # OwlViTModel / Owlv2Model inside the detector: its CLIP towers give the image-level embedding
        self._clip = getattr(self._model, config.backend)
        self.dimensions = int(self._model.config.projection_dim)
        self.name = model_name(config.model)

    def detect_batch(
        self, images: list[Image.Image], queries: list[list[str]], thresholds: list[float]
    ) -> list[list[Detection]]:
        """One forward pass over all images, each with its own queries and score threshold."""
        import torch
        from torchvision.ops import batched_nms

        if not images:
            return []
        counts = [len(q) for q in queries]
        # Nested lists of unequal length: the processor pads each to the longest with " " queries
        inputs = self._processor(text=[list(q) for q in queries], images=images, return_tensors="pt", truncation=True)
        inputs = {key: value.to(self._device) for key, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self._dtype)
        with torch.inference_mode():
            outputs = self._model(**inputs)
            # The model masks a padded query only when its first token id is 0, which a CLIP tokenizer never gives
            # (every query starts with <|startoftext|>), so a " " pad could win a box: mask the pads here. Float32
            # so the scaled boxes keep their precision under a float16 model.
            logits = outputs.logits.float()
            padded = (
                torch.arange(logits.shape[-1], device=logits.device)[None, :]
                >= torch.tensor(counts, device=logits.device)[:, None]
            )
            outputs.logits = logits.masked_fill(padded[:, None, :], torch.finfo(logits.dtype).min)
            outputs.pred_boxes = outputs.pred_boxes.float()
            results = self._processor.post_process_grounded_object_detection(
                outputs=outputs,
                threshold=min(thresholds),
                target_sizes=[(image.height, image.width) for image in images],
            )
            found = []
            for image, labels, threshold, result in zip(images, queries, thresholds, results, strict=True):
                keep = result["scores"] > threshold
                scores, classes, boxes = result["scores"][keep], result["labels"][keep], result["boxes"][keep]
                boxes = torch.stack(
                    (
                        boxes[:, 0].clamp(0, image.width),
                        boxes[:, 1].clamp(0, image.height),
                        boxes[:, 2].clamp(0, image.width),
                        boxes[:, 3].clamp(0, image.height),
                    ),
                    dim=1,
                )
                order = batched_nms(boxes, scores, classes, self._config.nms_iou)[: self._config.max_detections]
                found.append(
                    [
                        Detection(
                            label=labels[int(classes[i])],
                            score=float(scores[i]),
                            box=tuple(float(v) for v in boxes[i].tolist()),  # type: ignore[arg-type]
                        )
                        for i in order.tolist()
                    ]
                )
        return found

    def image_embeddings(self, images: list[Image.Image]) -> np.ndarray:
        """The CLIP-style image embedding of each image (`get_image_features`), L2-normalised, float32."""
        import torch

        if not images:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        pixels = self._processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            features = self._clip.get_image_features(pixel_values=pixels.to(self._device, self._dtype)).pooler_output
            features = features.float()
            features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return features.cpu().numpy().astype(np.float32)


def validate_queries(queries: list[str], config: DetectionConfig) -> list[str]:
    """The queries, stripped, or an AlmquistError that says what to change."""
    queries = list(queries or [])
    if not queries:
        raise InvalidArgument("give at least one query: what to look for, e.g. 'a cat'")
    if len(queries) > config.max_queries:
        raise ResourceExhausted(f"{len(queries)} queries in one request; the limit is {config.max_queries}")
    cleaned = []
    for i, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgument(f"query {i} is blank: give a short phrase such as 'a cat'")
        if len(query) > config.max_query_chars:
            raise ResourceExhausted(
                f"query {i} has {len(query)} characters; the limit is {config.max_query_chars}: use a short phrase"
            )
        cleaned.append(query.strip())
    return cleaned


def resolve_threshold(score_threshold: float, config: DetectionConfig) -> float:
    """The request's minimum score; 0 (unset in proto3) means the configured default."""
    try:
        value = float(score_threshold)
    except (TypeError, ValueError):
        raise InvalidArgument(f"score_threshold {score_threshold!r} is not a number: give one in [0, 1]") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"score_threshold {score_threshold} is outside [0, 1]; 0 uses the server's default")
    return value or config.score_threshold


@serve.deployment(name="Detection", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class Detector:
    """Serves one detection engine; see the module docstring."""

    def __init__(self, config: DetectionConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = DetectionConfig.model_validate(config)
        self._engine: DetectionEngine = (engine_cls or OwlViTEngine)(self._config)
        self._batch_loop: asyncio.AbstractEventLoop | None = None
        self._batched: Any = None

    async def detect(
        self, image: bytes, mime_type: str, queries: list[str], score_threshold: float = 0.0
    ) -> list[Detection]:
        labels = validate_queries(queries, self._config)
        threshold = resolve_threshold(score_threshold, self._config)
        picture = await asyncio.to_thread(decode_image, image, mime_type, self._config.images)
        return await self._batcher()(picture, labels, threshold)

    async def embed_images(self, images: list[tuple[bytes, str]]) -> np.ndarray:
        if not images:
            raise InvalidArgument("give at least one image to embed")
        if len(images) > self._config.max_embed_images:
            raise ResourceExhausted(f"{len(images)} images in one call; the limit is {self._config.max_embed_images}")
        pictures = await asyncio.to_thread(self._decode_all, list(images))
        size = self._config.max_batch_size
        chunks = [
            await asyncio.to_thread(self._engine.image_embeddings, pictures[start : start + size])
            for start in range(0, len(pictures), size)
        ]
        return np.concatenate(chunks, axis=0)

    def info(self) -> dict[str, Any]:
        return {"model": self._engine.name, "backend": self._config.backend, "dimensions": self._engine.dimensions}

    def _decode_all(self, images: list[tuple[bytes, str]]) -> list[Image.Image]:
        pictures = []
        for i, (data, mime_type) in enumerate(images):
            try:
                pictures.append(decode_image(data, mime_type, self._config.images))
            except AlmquistError as error:  # same status, and the message says which image
                raise type(error)(f"image {i}: {error.message}") from None
        return pictures

    def _batcher(self) -> Any:
        """`serve.batch` around `_detect_many`, sized from the config. Made per instance (a decorated method would
        share one queue, and the first caller's `self`, across every instance in the process) and per event loop
        (the queue's worker task lives on the loop that created it: one loop in a replica, one per `asyncio.run`
        in a test)."""
        loop = asyncio.get_running_loop()
        if self._batch_loop is not loop:
            # Ray's stub takes a function of one list; serve.batch batches each argument of several into lists
            self._batched = serve.batch(
                max_batch_size=self._config.max_batch_size, batch_wait_timeout_s=self._config.batch_wait_timeout_s
            )(self._detect_many)  # type: ignore[arg-type]
            self._batch_loop = loop
        return self._batched

    async def _detect_many(
        self, images: list[Image.Image], queries: list[list[str]], thresholds: list[float]
    ) -> list[list[Detection]]:
        return await asyncio.to_thread(self._engine.detect_batch, images, queries, thresholds)
