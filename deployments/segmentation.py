"""Promptable segmentation: SAM through transformers (`SamModel` + `SamProcessor`), masks from boxes or points.

In (by handle): `segment(image, mime_type, points=(), boxes=())`, the image as encoded bytes, points `(x, y,
foreground)` and boxes `(x0, y0, x1, y1)` in its pixels. Out: a list of `MaskResult`s in prompt order, one per box,
then one for all the points together (SAM's multi-point prompt, labels 1 on the object and 0 off it). Each mask is
a boolean array the image's size, with SAM's predicted IoU as its score, the bounding box of its pixels and its pixel
count. `mask_png` turns a mask into the 8-bit grey PNG the gRPC layer sends.

The image embedding (SAM's expensive ViT pass) is computed once per request and reused for every prompt kind.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image
from ray import serve

from almquist.config import SegmentationConfig, model_name, resolve_model_ref
from almquist.errors import InvalidArgument, ResourceExhausted
from almquist.images import decode_image, encode_png

Point = tuple[float, float, bool]
Box = tuple[float, float, float, float]


@dataclass
class MaskResult:
    mask: np.ndarray  # bool, height x width of the input image
    score: float  # SAM's predicted IoU of this mask
    box: tuple[int, int, int, int]  # bounding box of the mask's pixels (x0, y0, x1, y1), end exclusive; 0s if empty
    area: int  # pixels inside the mask


class SegmentationEngine(Protocol):
    name: str

    def __init__(self, config: SegmentationConfig) -> None: ...

    def segment(self, image: Image.Image, points: list[Point], boxes: list[Box]) -> list[MaskResult]:
        """One mask per box, then one for all the points if any; prompts in the image's pixels."""
        ...


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding box (x0, y0, x1, y1) of a mask's pixels, end exclusive; (0, 0, 0, 0) for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def masks_from_output(masks: Any, iou_scores: Any) -> list[MaskResult]:
    """MaskResults from post-processed masks (prompts x 1 x H x W, bool) and SAM's IoU scores (prompts x 1)."""
    results = []
    for mask, score in zip(masks[:, 0].cpu().numpy(), iou_scores[:, 0].float().cpu().numpy(), strict=True):
        mask = mask.astype(bool)
        results.append(MaskResult(mask=mask, score=float(score), box=mask_box(mask), area=int(mask.sum())))
    return results


class SamEngine:
    """`SamModel` + `SamProcessor` from a folder; single-mask output (`multimask_output=False`): SAM's own choice
    for box prompts and multi-point prompts, where its three-mask output is meant for one ambiguous point."""

    def __init__(self, config: SegmentationConfig) -> None:
        import torch
        from transformers import SamModel, SamProcessor

        path = resolve_model_ref(config.model)
        self._torch = torch
        self._device = config.device
        # transformers wraps PreTrainedModel.to in functools.wraps, which hides its bound self from mypy
        model = SamModel.from_pretrained(path, local_files_only=True)
        self._model = model.to(config.device).eval()  # type: ignore[arg-type]
        self._processor = SamProcessor.from_pretrained(path, local_files_only=True)
        self.name = model_name(config.model)

    def segment(self, image: Image.Image, points: list[Point], boxes: list[Box]) -> list[MaskResult]:
        prompts: dict[str, Any] = {}
        if boxes:  # one batch of box prompts: a mask each
            prompts["input_boxes"] = [[[float(v) for v in box] for box in boxes]]
        if points:  # one prompt of several points: one mask
            prompts["input_points"] = [[[float(x), float(y)] for x, y, _ in points]]
            prompts["input_labels"] = [[1 if foreground else 0 for _, _, foreground in points]]
        inputs = self._processor(images=image, return_tensors="pt", **prompts)
        results: list[MaskResult] = []
        with self._torch.inference_mode():
            embeddings = self._model.get_image_embeddings(inputs["pixel_values"].to(self._device))
            calls = []
            if boxes:
                calls.append({"input_boxes": inputs["input_boxes"].to(self._device)})
            if points:
                calls.append(
                    {
                        "input_points": inputs["input_points"].to(self._device),
                        "input_labels": inputs["input_labels"].to(self._device),
                    }
                )
            for prompt in calls:
                output = self._model(image_embeddings=embeddings, multimask_output=False, **prompt)
                [masks] = self._processor.post_process_masks(
                    output.pred_masks.cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
                )
                results.extend(masks_from_output(masks, output.iou_scores[0]))
        return results


def _length(value: Any) -> int | None:
    """len() of a tuple, list or array; None for anything else (strings included)."""
    if isinstance(value, str | bytes):
        return None
    try:
        return len(value)
    except TypeError:
        return None


def _items(values: Any, what: str) -> list[Any]:
    """A list of the prompts given as a list, a tuple or an array (None: none)."""
    if values is None:
        return []
    if _length(values) is None:
        raise InvalidArgument(f"{what} must be a list; got {type(values).__name__}")
    return list(values)


def _numbers(value: Any, count: int, what: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value[:count])
    except (TypeError, ValueError, IndexError, KeyError):
        numbers = ()
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise InvalidArgument(f"{what} must start with {count} finite numbers in pixels; got {value!r}")
    return numbers


def check_prompts(points: Sequence[Any], boxes: Sequence[Any], max_prompts: int) -> tuple[list[Point], list[Box]]:
    """Points and boxes as typed tuples, or InvalidArgument / ResourceExhausted saying which one is wrong."""
    points, boxes = _items(points, "points"), _items(boxes, "boxes")
    if not points and not boxes:
        raise InvalidArgument("give at least one prompt: points (x, y, foreground) or boxes (x0, y0, x1, y1)")
    if len(points) + len(boxes) > max_prompts:
        raise ResourceExhausted(
            f"{len(points)} points and {len(boxes)} boxes in one request; the limit is {max_prompts} prompts in all"
        )
    checked_points: list[Point] = []
    for i, point in enumerate(points):
        if _length(point) != 3:
            raise InvalidArgument(f"point {i} must be (x, y, foreground); got {point!r}")
        x, y = _numbers(point, 2, f"point {i}")
        foreground = point[2]
        if not isinstance(foreground, bool | np.bool_) and foreground not in (0, 1):
            raise InvalidArgument(f"point {i}: foreground must be true or false; got {foreground!r}")
        checked_points.append((x, y, bool(foreground)))
    checked_boxes: list[Box] = []
    for i, box in enumerate(boxes):
        if _length(box) != 4:
            raise InvalidArgument(f"box {i} must be (x0, y0, x1, y1); got {box!r}")
        x0, y0, x1, y1 = _numbers(box, 4, f"box {i}")
        if x1 <= x0 or y1 <= y0:
            raise InvalidArgument(f"box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is degenerate: it needs x0 < x1, y0 < y1")
        checked_boxes.append((x0, y0, x1, y1))
    return checked_points, checked_boxes


def fit_prompts(points: list[Point], boxes: list[Box], width: int, height: int) -> list[Box]:
    """InvalidArgument for a point outside the image or a box with nothing inside it; boxes clipped to the image
    (a detector's boxes may overhang the edge by a pixel)."""
    for i, (x, y, _) in enumerate(points):
        if not (0 <= x <= width and 0 <= y <= height):
            raise InvalidArgument(f"point {i} ({x:g}, {y:g}) is outside the {width}x{height} image")
    clipped = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise InvalidArgument(f"box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {width}x{height} image")
        clipped.append(box)
    return clipped


def mask_png(mask: np.ndarray) -> bytes:
    """A mask as an 8-bit grey PNG: 255 inside, 0 outside, the mask's size."""
    array = np.asarray(mask)
    if array.ndim != 2 or array.size == 0:
        raise InvalidArgument(f"a mask must be a non-empty 2-D array; got shape {array.shape}")
    return encode_png(Image.fromarray(np.where(array.astype(bool), 255, 0).astype(np.uint8)))


@serve.deployment(name="Segmentation", ray_actor_options={"num_cpus": 0.5})
class Segmentation:
    """Serves one segmentation engine; see the module docstring."""

    def __init__(self, config: SegmentationConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = SegmentationConfig.model_validate(config)
        self._engine: SegmentationEngine = (engine_cls or SamEngine)(self._config)

    async def segment(
        self, image: bytes, mime_type: str, points: Sequence[Point] = (), boxes: Sequence[Box] = ()
    ) -> list[MaskResult]:
        checked_points, checked_boxes = check_prompts(points, boxes, self._config.max_prompts)
        return await asyncio.to_thread(self._segment, image, mime_type, checked_points, checked_boxes)

    def _segment(self, image: bytes, mime_type: str, points: list[Point], boxes: list[Box]) -> list[MaskResult]:
        picture = decode_image(image, mime_type, self._config.images)
        clipped = fit_prompts(points, boxes, picture.width, picture.height)
        return self._engine.segment(picture, points, clipped)

    def info(self) -> dict[str, Any]:
        return {"model": self._engine.name, "max_prompts": self._config.max_prompts}
