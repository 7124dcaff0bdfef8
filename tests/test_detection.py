"""The Detection deployment on a tiny OWL-ViT built from a config: the same answers as transformers + torchvision
called by hand, one forward pass for concurrent requests, unit-length image embeddings, and clean refusals."""

from __future__ import annotations

import asyncio
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import batched_nms
from transformers import Owlv2ForObjectDetection, Owlv2Processor, OwlViTForObjectDetection, OwlViTProcessor

from almquist.config import DetectionConfig, ImageLimits
from almquist.errors import InvalidArgument, ResourceExhausted
from almquist.images import encode_png
from deployments.detection import Detection, Detector, OwlViTEngine
from tests.tiny_vision import _save_tiny_owlv2, save_tiny_owlvit

QUERIES = [["a cat", "a dog", "a person"], ["a red ball", "a cup", "a bird"], ["a car", "the photo"]]
THRESHOLD = 0.3  # the tiny model's scores spread over (0.03, 0.9): some boxes pass, some do not


@pytest.fixture(autouse=True)
def _batching_outside_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray 2.60's batch queue reads the replica's max_ongoing_requests to log a warning, and raises outside a
    replica; only that check is turned off, the batching itself runs as in Serve."""
    from ray.serve import batching

    monkeypatch.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_owlvit(tmp_path_factory.mktemp("owlvit"))


@pytest.fixture(scope="module")
def library(model_dir: str) -> tuple[OwlViTProcessor, OwlViTForObjectDetection]:
    processor = OwlViTProcessor.from_pretrained(model_dir, local_files_only=True)
    model = OwlViTForObjectDetection.from_pretrained(model_dir, local_files_only=True).eval()
    return processor, model


def _config(model_dir: str, **overrides) -> DetectionConfig:
    settings = {
        "model": model_dir,
        "score_threshold": THRESHOLD,
        "batch_wait_timeout_s": 0.2,
        "images": ImageLimits(max_side=512, max_pixels=100_000),
    }
    return DetectionConfig(**{**settings, **overrides})


def _images() -> list[Image.Image]:
    """Three seeded pictures of different shapes (so box scaling per image is exercised)."""
    rng = np.random.default_rng(7)
    sizes = [(80, 48), (60, 90), (100, 100)]
    pictures = []
    for width, height in sizes:
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        pixels[height // 4 : height // 2, width // 3 : 2 * width // 3] = (220, 40, 40)  # a flat red patch
        pictures.append(Image.fromarray(pixels))
    return pictures


def _by_hand(processor, model, image: Image.Image, queries: list[str], threshold: float, config: DetectionConfig):
    """transformers + torchvision called directly: processor, model, post-processing, clip, per-label NMS."""
    inputs = processor(text=[queries], images=[image], return_tensors="pt", truncation=True)
    with torch.inference_mode():
        outputs = model(**inputs)
    [result] = processor.post_process_grounded_object_detection(
        outputs=outputs, threshold=threshold, target_sizes=[(image.height, image.width)], text_labels=[queries]
    )
    boxes = result["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    keep = batched_nms(boxes, result["scores"], result["labels"], config.nms_iou)[: config.max_detections]
    return [(result["text_labels"][i], float(result["scores"][i]), tuple(boxes[i].tolist())) for i in keep.tolist()]


def _assert_same(found: list[Detection], expected: list[tuple], atol: float = 1e-5) -> None:
    assert [d.label for d in found] == [label for label, _, _ in expected]
    np.testing.assert_allclose([d.score for d in found], [score for _, score, _ in expected], atol=atol)
    np.testing.assert_allclose(
        np.array([d.box for d in found]).reshape(-1, 4), np.array([b for _, _, b in expected]).reshape(-1, 4), atol=atol
    )


def _png(image: Image.Image) -> bytes:
    return encode_png(image)


class CountingEngine(OwlViTEngine):
    """The real engine, recording how many images each forward pass held."""

    def __init__(self, config: DetectionConfig) -> None:
        super().__init__(config)
        self.batch_sizes: list[int] = []

    def detect_batch(self, images, queries, thresholds):
        self.batch_sizes.append(len(images))
        return super().detect_batch(images, queries, thresholds)


def test_detect_batch_equals_library(model_dir: str, library) -> None:
    processor, model = library
    config = _config(model_dir)
    engine = OwlViTEngine(config)
    images = _images()[:2]
    found = engine.detect_batch(images, QUERIES[:2], [THRESHOLD, THRESHOLD])
    assert len(found) == 2
    for image, queries, detections in zip(images, QUERIES[:2], found, strict=True):
        expected = _by_hand(processor, model, image, queries, THRESHOLD, config)
        assert detections, "the threshold should leave boxes on random weights"
        assert len(detections) < 16  # 16 patches: the threshold and NMS removed some
        _assert_same(detections, expected)
        for d in detections:
            assert d.label in queries and d.score > THRESHOLD
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)


def test_unequal_query_lists_never_answer_a_pad(model_dir: str, library) -> None:
    processor, model = library
    config = _config(model_dir, max_detections=4)
    engine = OwlViTEngine(config)
    images = [_images()[0], _images()[2]]
    queries = [QUERIES[0], QUERIES[2]]  # 3 and 2 queries: the second is padded with a " " query
    found = engine.detect_batch(images, queries, [0.05, 0.05])
    for image, labels, detections in zip(images, queries, found, strict=True):
        assert 0 < len(detections) <= 4
        assert all(d.label in labels for d in detections)
        _assert_same(detections, _by_hand(processor, model, image, labels, 0.05, config))


def test_owlv2_backend_equals_library(tmp_path) -> None:
    """OWLv2 (the cluster's detector) pads images square: boxes must still land in the unpadded image."""
    folder = _save_tiny_owlv2(tmp_path)
    processor = Owlv2Processor.from_pretrained(folder, local_files_only=True)
    model = Owlv2ForObjectDetection.from_pretrained(folder, local_files_only=True).eval()
    config = _config(folder, backend="owlv2")
    engine = OwlViTEngine(config)
    images = _images()[:2]
    found = engine.detect_batch(images, QUERIES[:2], [THRESHOLD, THRESHOLD])
    for image, queries, detections in zip(images, QUERIES[:2], found, strict=True):
        assert detections
        _assert_same(detections, _by_hand(processor, model, image, queries, THRESHOLD, config))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model.owlv2.get_image_features(pixel_values=pixels).pooler_output)
    np.testing.assert_allclose(engine.image_embeddings(images), expected.numpy(), atol=1e-5)


def test_float16_weights_give_valid_detections(model_dir: str) -> None:
    """The cluster runs float16; on CPU the same path must give sane boxes and unit embeddings."""
    engine = OwlViTEngine(_config(model_dir, dtype="float16"))
    images = _images()
    found = engine.detect_batch(images, QUERIES, [0.3] * 3)
    for image, queries, detections in zip(images, QUERIES, found, strict=True):
        assert detections
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
        for d in detections:
            x0, y0, x1, y1 = d.box
            assert d.label in queries and 0.3 < d.score <= 1.0
            assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height
    vectors = engine.image_embeddings(images)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_deployment_detect_equals_library(model_dir: str, library) -> None:
    processor, model = library
    config = _config(model_dir)
    detector = Detector.func_or_class(config)
    image = _images()[1]
    found = asyncio.run(detector.detect(_png(image), "image/png", QUERIES[1]))  # 0: the configured 0.3
    assert found and all(isinstance(d, Detection) for d in found)
    _assert_same(found, _by_hand(processor, model, image, QUERIES[1], THRESHOLD, config))
    stricter = asyncio.run(detector.detect(_png(image), "image/png", QUERIES[1], 0.6))
    _assert_same(stricter, _by_hand(processor, model, image, QUERIES[1], 0.6, config))
    assert len(stricter) < len(found)
    assert detector.info() == {"model": "tiny-owlvit", "backend": "owlvit", "dimensions": 32}


def test_concurrent_requests_share_one_forward_pass(model_dir: str) -> None:
    detector = Detector.func_or_class(_config(model_dir), CountingEngine)
    engine: CountingEngine = detector._engine  # type: ignore[assignment]
    requests = [(_png(image), "image/png", queries) for image, queries in zip(_images(), QUERIES, strict=True)]

    async def one_at_a_time():
        return [await detector.detect(*request) for request in requests]

    async def together():
        return await asyncio.gather(*(detector.detect(*request) for request in requests))

    alone = asyncio.run(one_at_a_time())
    assert engine.batch_sizes == [1, 1, 1]
    batched = asyncio.run(together())
    assert engine.batch_sizes[3:] == [3], engine.batch_sizes
    for single, shared in zip(alone, batched, strict=True):
        assert single
        _assert_same(shared, [(d.label, d.score, d.box) for d in single], atol=1e-4)


def test_image_embeddings_equal_library(model_dir: str, library) -> None:
    processor, model = library
    config = _config(model_dir, max_batch_size=2)  # three images: two chunks in embed_images
    images = _images()
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        expected = model.owlvit.get_image_features(pixel_values=pixels).pooler_output
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()

    vectors = OwlViTEngine(config).image_embeddings(images)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])

    detector = Detector.func_or_class(config)
    served = asyncio.run(detector.embed_images([(_png(image), "image/png") for image in images]))
    np.testing.assert_allclose(served, expected, atol=1e-5)


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(buffer, format="GIF")
    return buffer.getvalue()


def test_bad_input_is_refused_and_the_replica_keeps_serving(model_dir: str, library) -> None:
    processor, model = library
    config = _config(model_dir)
    detector = Detector.func_or_class(config)
    image = _images()[0]
    good = _png(image)
    big = _png(Image.new("RGB", (600, 20), (0, 0, 0)))

    def detect(data: bytes = good, mime: str = "image/png", queries=("a cat",), threshold: float = 0.0):
        return asyncio.run(detector.detect(data, mime, list(queries), threshold))

    cases = [
        (lambda: detect(b"definitely not an image", ""), InvalidArgument, "not a readable image"),
        (lambda: detect(good[: len(good) // 2]), InvalidArgument, "truncated"),
        (lambda: detect(b""), InvalidArgument, "0 bytes"),
        (lambda: detect(_gif(), "image/gif"), InvalidArgument, "unsupported image type"),
        (lambda: detect(_gif(), ""), InvalidArgument, "unsupported image format GIF"),
        (lambda: detect(big), ResourceExhausted, "600x20"),
        (lambda: detect(queries=()), InvalidArgument, "give at least one query"),
        (lambda: detect(queries=("a cat", "  ")), InvalidArgument, "query 1 is blank"),
        (lambda: detect(queries=[f"thing {i}" for i in range(17)]), ResourceExhausted, "the limit is 16"),
        (lambda: detect(queries=("a" * 201,)), ResourceExhausted, "query 0 has 201 characters"),
        (lambda: detect(threshold=-0.1), InvalidArgument, "outside [0, 1]"),
        (lambda: detect(threshold=1.5), InvalidArgument, "outside [0, 1]"),
        (lambda: detect(threshold=math.nan), InvalidArgument, "outside [0, 1]"),
        (lambda: asyncio.run(detector.embed_images([])), InvalidArgument, "at least one image"),
        (lambda: asyncio.run(detector.embed_images([(good, "image/png")] * 65)), ResourceExhausted, "limit is 64"),
        (lambda: asyncio.run(detector.embed_images([(good, "image/png"), (b"", "")])), InvalidArgument, "image 1:"),
        (lambda: asyncio.run(detector.embed_images([(big, "image/png")])), ResourceExhausted, "image 0: the image is"),
    ]
    for call, error, words in cases:
        with pytest.raises(error) as caught:
            call()
        assert words in caught.value.message, caught.value.message

    found = detect(queries=QUERIES[0])
    _assert_same(found, _by_hand(processor, model, image, QUERIES[0], THRESHOLD, config))
    assert asyncio.run(detector.embed_images([(good, "image/png")])).shape == (1, 32)
