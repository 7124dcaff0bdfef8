"""Segmentation deployment (deployments/segmentation.py) on a tiny SAM built from a config: masks for boxes and
for points equal transformers called by hand; mask PNGs round-trip; bad prompts and images refused."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import torch
from PIL import Image

from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.segmentation import MaskResult, Segmentation, mask_png
from tests.tiny_vision import save_tiny_sam

WIDTH, HEIGHT = 80, 50  # not square: SAM resizes the longest edge and pads, post-processing undoes both
BOXES = [(5.0, 5.0, 40.0, 30.0), (10.0, 10.0, 70.0, 45.0), (50.0, 2.0, 78.0, 20.0)]
POINTS = [(20.0, 20.0, True), (60.0, 30.0, False), (35.0, 12.0, True)]


def _picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xs * 255 / WIDTH, ys * 255 / HEIGHT, ((xs // 20 + ys // 20) % 2) * 200.0], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _segment(deployment, image: bytes, points=(), boxes=(), mime: str = "image/png") -> list[MaskResult]:
    return asyncio.run(deployment.segment(image, mime, points, boxes))


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_sam(tmp_path_factory.mktemp("sam"))


@pytest.fixture(scope="module")
def segmentation(sam_folder: str):
    config = {"model": sam_folder, "max_prompts": 6, "images": {"max_side": 512}}
    return Segmentation.func_or_class(config)  # type: ignore[attr-defined]  # a Deployment


@pytest.fixture(scope="module")
def library(sam_folder: str):
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(sam_folder, local_files_only=True).eval()
    return model, SamProcessor.from_pretrained(sam_folder, local_files_only=True)


def _by_hand(library, image: Image.Image, **prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers by hand: processor, get_image_embeddings, model(...), post_process_masks -> (masks, scores)."""
    model, processor = library
    inputs = processor(images=image, return_tensors="pt", **prompts)
    tensors = {k: inputs[k] for k in ("input_boxes", "input_points", "input_labels") if k in inputs}
    with torch.no_grad():
        embeddings = model.get_image_embeddings(inputs["pixel_values"])
        output = model(image_embeddings=embeddings, multimask_output=False, **tensors)
    [masks] = processor.post_process_masks(output.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    return masks[:, 0], output.iou_scores[0, :, 0]


def _assert_same(results: list[MaskResult], masks: torch.Tensor, scores: torch.Tensor) -> None:
    assert len(results) == len(masks)
    for result, mask, score in zip(results, masks.numpy(), scores.tolist(), strict=True):
        assert result.mask.dtype == np.bool_ and result.mask.shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(result.mask, mask)
        assert result.score == pytest.approx(score, rel=1e-6, abs=1e-7)
        assert result.area == int(mask.sum())
        rows, cols = np.nonzero(mask)
        expected_box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) if rows.size else (0, 0, 0, 0)
        assert result.box == tuple(int(v) for v in expected_box)


def test_boxes_equal_library(segmentation, library) -> None:
    image = _picture()
    results = _segment(segmentation, _png(image), boxes=BOXES)
    masks, scores = _by_hand(library, image, input_boxes=[[list(b) for b in BOXES]])
    _assert_same(results, masks, scores)
    assert any(0 < r.area < WIDTH * HEIGHT for r in results)  # masks with an inside and an outside
    assert len({r.mask.tobytes() for r in results}) == len(BOXES)  # each box its own mask


def test_points_equal_library(segmentation, library) -> None:
    image = _picture()
    results = _segment(segmentation, _png(image), points=POINTS)
    masks, scores = _by_hand(library, image, input_points=[[[x, y] for x, y, _ in POINTS]], input_labels=[[1, 0, 1]])
    assert len(results) == 1  # all the points are one prompt
    _assert_same(results, masks, scores)
    assert 0 < results[0].area < WIDTH * HEIGHT


def test_boxes_then_points_share_one_embedding(segmentation, library) -> None:
    """Both kinds in one request: boxes' masks, then the points' mask, as if each were sent alone; and the same as
    SAM's full forward from pixels (so reusing the embedding changes nothing)."""
    image = _png(_picture())
    both = _segment(segmentation, image, points=POINTS, boxes=BOXES)
    alone = _segment(segmentation, image, boxes=BOXES) + _segment(segmentation, image, points=POINTS)
    assert len(both) == len(BOXES) + 1
    for a, b in zip(both, alone, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert (a.score, a.box, a.area) == (b.score, b.box, b.area)

    model, processor = library
    inputs = processor(images=_picture(), input_boxes=[[list(b) for b in BOXES]], return_tensors="pt")
    with torch.no_grad():
        full = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False)
    [masks] = processor.post_process_masks(full.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    for result, mask in zip(both, masks[:, 0].numpy(), strict=False):
        np.testing.assert_array_equal(result.mask, mask)


def test_overhanging_box_is_clipped(segmentation) -> None:
    image = _png(_picture())
    [overhang] = _segment(segmentation, image, boxes=[(-10.0, -5.0, 40.0, 30.0)])
    [inside] = _segment(segmentation, image, boxes=[(0.0, 0.0, 40.0, 30.0)])
    np.testing.assert_array_equal(overhang.mask, inside.mask)
    [from_array] = _segment(segmentation, image, boxes=np.array([[0.0, 0.0, 40.0, 30.0]], dtype=np.float32))
    np.testing.assert_array_equal(from_array.mask, inside.mask)  # a detector's boxes may come as an array


def test_mask_png_round_trip(segmentation) -> None:
    [result] = _segment(segmentation, _png(_picture()), boxes=BOXES[:1])
    png = mask_png(result.mask)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG" and decoded.mode == "L" and decoded.size == (WIDTH, HEIGHT)
    grey = np.asarray(decoded)
    assert set(np.unique(grey).tolist()) <= {0, 255}
    np.testing.assert_array_equal(grey == 255, result.mask)
    with pytest.raises(InvalidArgument, match="2-D"):
        mask_png(np.zeros((2, 3, 4), dtype=bool))


@pytest.mark.parametrize(
    ("data", "points", "boxes", "error", "words"),
    [
        (None, (), (), InvalidArgument, "at least one prompt"),
        (None, POINTS, [*BOXES, (0, 0, 5, 5)], ResourceExhausted, "limit is 6"),
        (None, [(10, 10, True), (100, 10, True)], (), InvalidArgument, "point 1"),
        (None, [(10, -1, True)], (), InvalidArgument, "point 0"),
        (None, [(10, 10)], (), InvalidArgument, "point 0"),
        (None, ["xyz"], (), InvalidArgument, "point 0"),
        (None, [(10, float("inf"), True)], (), InvalidArgument, "point 0"),
        (None, [(10, 10, "yes")], (), InvalidArgument, "foreground"),
        (None, (), [(10, 10, 10, 20)], InvalidArgument, "box 0 .* degenerate"),
        (None, (), [(0, 0, 5, 5), (30, 20, 10, 40)], InvalidArgument, "box 1 .* degenerate"),
        (None, (), [(0, 0, 5, 5), (200, 200, 300, 300)], InvalidArgument, "box 1 .* outside"),
        (None, (), [(0, 0, "x", 5)], InvalidArgument, "box 0"),
        (b"", (), BOXES[:1], InvalidArgument, "empty"),
        (b"GIF89a garbage", (), BOXES[:1], InvalidArgument, "not a readable image"),
    ],
)
def test_bad_input_is_refused_and_serving_goes_on(segmentation, data, points, boxes, error, words) -> None:
    good = _png(_picture())
    [before] = _segment(segmentation, good, boxes=BOXES[:1])
    with pytest.raises(error, match=words):
        _segment(segmentation, good if data is None else data, points, boxes)
    [after] = _segment(segmentation, good, boxes=BOXES[:1])
    np.testing.assert_array_equal(after.mask, before.mask)
    assert after.score == before.score


def test_image_over_the_limits(sam_folder: str) -> None:
    small_limits = Segmentation.func_or_class({"model": sam_folder, "images": {"max_side": 64}})  # type: ignore[attr-defined]  # a Deployment
    with pytest.raises(ResourceExhausted, match="80x50"):
        _segment(small_limits, _png(_picture()), boxes=BOXES[:1])
    [result] = _segment(small_limits, _png(_picture().resize((64, 40))), boxes=[(5, 5, 40, 30)])
    assert result.mask.shape == (40, 64)
