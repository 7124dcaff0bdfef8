"""Depth deployment (deployments/depth.py) on tiny models built from a config: the DPT engine and the timm MiDaS
engine (one network file in three formats), compared with the libraries called directly; bad input refused."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from PIL import Image

from almquist.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from deployments.depth import Depth, DepthResult, TimmMidasEngine, describe_distance, midas_default_processor
from tests.tiny_vision import _save_tiny_timm_midas, _tiny_midas_class, save_tiny_dpt

WIDTH, HEIGHT = 80, 50


def _picture(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> Image.Image:
    """A smooth gradient with noise: something for a depth model to vary over."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) * 127 / (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _estimate(deployment, image: bytes, boxes=(), mime: str = "image/png") -> DepthResult:
    return asyncio.run(deployment.estimate(image, mime, boxes))


@pytest.fixture(scope="module")
def dpt_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_dpt(tmp_path_factory.mktemp("dpt"))


@pytest.fixture(scope="module")
def depth(dpt_folder: str):
    return Depth.func_or_class({"model": dpt_folder, "max_boxes": 4, "images": {"max_side": 512}})


def _library_depth(folder: str, image: Image.Image) -> np.ndarray:
    """transformers by hand: processor, model, post-processing to the image's size."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    processor = DPTImageProcessor.from_pretrained(folder)
    model = DPTForDepthEstimation.from_pretrained(folder, local_files_only=True).eval()
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    [post] = processor.post_process_depth_estimation(outputs, target_sizes=[(image.height, image.width)])
    return cast(torch.Tensor, post["predicted_depth"]).numpy()  # typed as transformers' TensorType union


def test_dpt_equals_library_and_box_medians(depth, dpt_folder: str) -> None:
    image = _picture()
    expected = _library_depth(dpt_folder, image)
    assert expected.shape == (HEIGHT, WIDTH)
    assert expected.std() > 0.01  # a map that varies, so the medians below say something
    boxes = [(0, 0, 40, 25), (10.5, 5.2, 30.7, 20.0), (-10, -10, 20, 15), (70, 40, 200, 300)]
    result = _estimate(depth, _png(image), boxes)

    # map_max_side (256) is above the image's size: the map is the library's, only cast to float16
    assert result.depth.dtype == np.float16
    assert (result.width, result.height) == (WIDTH, HEIGHT)
    np.testing.assert_array_equal(result.depth, expected.astype(np.float16))
    # medians on the full-resolution float32 map; fractional edges take every pixel touched, overhangs are clipped
    regions = [expected[0:25, 0:40], expected[5:20, 10:31], expected[0:15, 0:20], expected[40:50, 70:80]]
    assert result.box_median_depth == [float(np.median(r)) for r in regions]


def test_downsampled_map_keeps_aspect(dpt_folder: str) -> None:
    image = _picture()
    expected = _library_depth(dpt_folder, image)
    small = Depth.func_or_class({"model": dpt_folder, "map_max_side": 32})
    result = _estimate(small, _png(image), [(0, 0, 40, 25)])
    assert result.depth.shape == (20, 32) and (result.width, result.height) == (32, 20)  # 80x50 scaled by 0.4
    assert result.depth.dtype == np.float16
    assert result.box_median_depth == [float(np.median(expected[0:25, 0:40]))]  # still the full-resolution map
    # area averaging keeps the map's mean
    assert float(result.depth.astype(np.float32).mean()) == pytest.approx(float(expected.mean()), rel=0.01)

    tall = _estimate(Depth.func_or_class({"model": dpt_folder, "map_max_side": 45}), _png(_picture(30, 90)))
    assert tall.depth.shape == (45, 15)


def test_boxes_as_array_or_none(depth) -> None:
    image = _png(_picture())
    listed = _estimate(depth, image, [(0, 0, 40, 25)])
    assert _estimate(depth, image, np.array([[0, 0, 40, 25]], dtype=np.float32)).box_median_depth == (
        listed.box_median_depth
    )
    assert _estimate(depth, image, None).box_median_depth == []


def test_float16_bytes_round_trip(depth) -> None:
    result = _estimate(depth, _png(_picture(seed=1)))
    wire = np.asarray(result.depth, dtype="<f2").tobytes()  # what the gRPC layer sends
    assert len(wire) == 2 * result.width * result.height
    back = np.frombuffer(wire, dtype="<f2").reshape(result.height, result.width)
    np.testing.assert_array_equal(back, result.depth)


def test_describe_distance() -> None:
    ramp = np.tile(np.linspace(0, 1, 90, dtype=np.float32)[:, None], (1, 10))  # inverse depth: bottom rows nearest
    assert describe_distance([0.9, 0.5, 0.1], ramp) == ["near", "middle", "far"]
    assert describe_distance([0.5, 0.5], np.full((4, 4), 0.5, dtype=np.float16)) == ["middle", "middle"]
    assert describe_distance([], ramp) == []


def test_describe_distance_on_a_result(depth) -> None:
    result = _estimate(depth, _png(_picture()), [(0, 0, 80, 50)])
    [word] = describe_distance(result.box_median_depth, result.depth)
    assert word == "middle"  # the whole image's median sits in its own middle third


@pytest.mark.parametrize(
    ("data", "boxes", "error", "words"),
    [
        (b"", (), InvalidArgument, "empty"),
        (b"\x89PNG\r\n\x1a\nnot really a png", (), InvalidArgument, "not a readable image"),
        (None, [(10, 10, 5, 20)], InvalidArgument, "box 0"),
        (None, [(0, 0, 10, 10), (100, 100, 120, 120)], InvalidArgument, "box 1"),
        (None, [(0, 0, 10, 10), (0, 0, float("nan"), 10)], InvalidArgument, "box 1"),
        (None, [(0, 0, 10)], InvalidArgument, "box 0"),
        (None, [("a", 0, 1, 1)], InvalidArgument, "box 0"),
        (None, [(0, 0, 5, 5)] * 5, ResourceExhausted, "limit is 4"),
        (_png(_picture(600, 20)), (), ResourceExhausted, "600x20"),
    ],
)
def test_bad_input_is_refused_and_serving_goes_on(depth, data, boxes, error, words) -> None:
    good = _png(_picture())
    before = _estimate(depth, good, [(0, 0, 40, 25)])
    with pytest.raises(error, match=words):
        _estimate(depth, good if data is None else data, boxes)
    after = _estimate(depth, good, [(0, 0, 40, 25)])
    np.testing.assert_array_equal(after.depth, before.depth)
    assert after.box_median_depth == before.box_median_depth


def test_unsupported_mime_type(depth) -> None:
    with pytest.raises(InvalidArgument, match="unsupported image type"):
        _estimate(depth, _png(_picture()), (), mime="image/gif")


@pytest.mark.parametrize("file_format", ["torchscript", "export", "pickle"])
def test_timm_midas_engine_equals_the_network(tmp_path: Path, file_format: str) -> None:
    folder = _save_tiny_timm_midas(tmp_path, file_format)
    deployment = Depth.func_or_class({"model": folder, "backend": "timm_midas"})
    assert isinstance(deployment._engine, TimmMidasEngine)
    image = _picture()
    result = _estimate(deployment, _png(image), [(0, 0, 40, 25)])

    # by hand: the saved processor, the same network built eagerly (seed 0), MiDaS's bicubic resize back
    from transformers import DPTImageProcessor

    pixels = DPTImageProcessor.from_pretrained(folder)(images=image, return_tensors="pt")["pixel_values"]
    torch.manual_seed(0)
    network = _tiny_midas_class()().eval()
    with torch.no_grad():
        predicted = network(pixels)
    expected = torch.nn.functional.interpolate(predicted[:, None], size=(HEIGHT, WIDTH), mode="bicubic")[0, 0].numpy()
    assert expected.std() > 0.01
    np.testing.assert_allclose(result.depth.astype(np.float32), expected, rtol=2e-3, atol=2e-3)  # float16 map
    assert result.box_median_depth[0] == pytest.approx(float(np.median(expected[0:25, 0:40])), rel=1e-5)


def test_timm_midas_file_path_and_missing_file(tmp_path: Path) -> None:
    folder = Path(_save_tiny_timm_midas(tmp_path, "torchscript"))
    by_file = Depth.func_or_class({"model": str(folder / "model.pt"), "backend": "timm_midas"})
    by_folder = Depth.func_or_class({"model": str(folder), "backend": "timm_midas"})
    image = _png(_picture())
    np.testing.assert_array_equal(_estimate(by_file, image).depth, _estimate(by_folder, image).depth)
    with pytest.raises(FailedPrecondition, match="no MiDaS model file"):
        Depth.func_or_class({"model": str(tmp_path / "empty"), "backend": "timm_midas"})


def test_midas_default_transform() -> None:
    """Without a preprocessor_config.json: MiDaS v3.1's 384 transform, aspect kept, sides multiples of 32."""
    pixels = midas_default_processor()(images=_picture(), return_tensors="pt")["pixel_values"]
    height, width = pixels.shape[-2:]
    assert height % 32 == 0 and width % 32 == 0 and 384 in (height, width)
    assert abs(width / height - WIDTH / HEIGHT) < 0.2
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
