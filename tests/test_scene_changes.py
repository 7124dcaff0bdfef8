"""Scene cuts: synthetic videos made here (numpy frames, PNG-encoded), checked against known boundaries and
against PySceneDetect's own `detect()` run on a lossless video file of the same frames."""

from __future__ import annotations

import asyncio
import functools
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.scene_changes import SceneChanges, SceneCutResult

WIDTH, HEIGHT, FPS = 320, 180, 25.0  # wider than 256 px: the detector downscales, as scenedetect's SceneManager does
YY, XX = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)


def _scene(kind: str, t: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB frame of a scene at time step t: a distinct colour and texture, slight motion, sensor noise."""
    if kind == "sky":  # blue vertical gradient, a small bright square drifting right
        frame = np.stack([40 + 0.2 * YY, 90 + 0.3 * YY, 200 - 0.2 * YY], axis=-1)
        x0 = 40 + 2 * t
        frame[70:100, x0 : x0 + 30] = (250, 250, 220)
    elif kind == "sunset":  # warm low-frequency blobs, swaying
        wave = np.sin((XX + 1.5 * t) / 37.0) * np.cos(YY / 29.0)
        frame = np.stack([200 + 40 * wave, 110 + 50 * wave, 40 + 20 * wave], axis=-1)
    elif kind == "field":  # green 40 px checkerboard, panning 1 px a frame
        checks = (((XX + t) // 40 + YY // 40) % 2)[..., None]
        frame = checks * np.array([60, 170, 50]) + (1 - checks) * np.array([30, 110, 40])
    else:
        raise ValueError(kind)
    return np.clip(frame + rng.normal(0.0, 2.0, frame.shape), 0, 255).astype(np.uint8)


def three_scenes(length: int = 20, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_scene(kind, t, rng) for kind in ("sky", "sunset", "field") for t in range(length)]


def slow_fade(length: int = 60, seed: int = 1) -> list[np.ndarray]:
    """A cross-fade from a blue scene to an orange one over `length` frames (per frame at most ~8, at once ~54)."""
    rng = np.random.default_rng(seed)
    start = np.stack([40 + 0.2 * YY, 90 + 0.3 * YY, 200 - 0.2 * YY], axis=-1)
    end = np.stack([220 + 0.1 * YY, 120 + 0.2 * XX, 40 + 0.1 * YY], axis=-1)
    frames = []
    for t in range(length):
        alpha = t / (length - 1)
        frame = (1 - alpha) * start + alpha * end + rng.normal(0.0, 2.0, start.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def steady_pan(length: int = 60, seed: int = 2) -> list[np.ndarray]:
    """A camera panning 4 px a frame across a wide, smooth, colourful landscape (per frame ~4, at once ~55)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0 : WIDTH + 4 * length].astype(np.float32)
    land = np.stack(
        [
            120 + 80 * np.sin(xx / 53.0) * np.cos(yy / 41.0),
            120 + 70 * np.cos(xx / 67.0 + 1.0),
            120 + 60 * np.sin(yy / 31.0 + xx / 97.0),
        ],
        axis=-1,
    )
    frames = []
    for t in range(length):
        window = land[:, 4 * t : 4 * t + WIDTH] + rng.normal(0.0, 2.0, (HEIGHT, WIDTH, 3))
        frames.append(np.clip(window, 0, 255).astype(np.uint8))
    return frames


def _png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def as_request(frames: list[np.ndarray], fps: float = FPS) -> list[tuple[bytes, str, float]]:
    return [(_png(frame), "image/png", i / fps) for i, frame in enumerate(frames)]


@functools.cache
def video(name: str) -> list[tuple[bytes, str, float]]:
    """The request for one of the videos above, encoded once per test session (PNG encoding is the slow part)."""
    frames = {"three scenes": three_scenes, "slow fade": slow_fade, "steady pan": steady_pan}[name]()
    return as_request(frames)


def _detect(app: SceneChanges, frames, threshold: float = 0.0) -> list[SceneCutResult]:
    return asyncio.run(app.detect(frames, threshold))


@pytest.fixture(scope="module")
def app() -> SceneChanges:
    return SceneChanges.func_or_class({})


def test_cuts_exactly_at_the_scene_boundaries(app: SceneChanges) -> None:
    cuts = _detect(app, video("three scenes"))
    assert [(c.frame_index, c.timestamp_s) for c in cuts] == [(20, 20 / FPS), (40, 40 / FPS)]
    assert all(isinstance(c, SceneCutResult) and c.score > 27.0 for c in cuts)


def test_timestamps_are_the_callers(app: SceneChanges) -> None:
    request = [(data, mime, 100.0 + 0.5 * i) for i, (data, mime, _) in enumerate(video("three scenes"))]
    assert [(c.frame_index, c.timestamp_s) for c in _detect(app, request)] == [(20, 110.0), (40, 120.0)]


@pytest.mark.parametrize("name", ["slow fade", "steady pan"])
def test_no_cut_in_a_slow_fade_or_a_steady_pan(app: SceneChanges, name: str) -> None:
    frames = video(name)
    assert _detect(app, frames) == []
    # the same change all at once is a cut: the first frame, then the last
    at_once = SceneChanges.func_or_class({"min_scene_frames": 1})
    assert [c.frame_index for c in _detect(at_once, [frames[0], (frames[-1][0], "image/png", 1.0)])] == [1]


def test_threshold_argument_and_min_scene_length() -> None:
    frames = video("three scenes")
    strict = SceneChanges.func_or_class({})
    assert _detect(strict, frames, threshold=250.0) == []
    # with a 30-frame minimum scene neither 20-frame scene is long enough: no cut
    assert _detect(SceneChanges.func_or_class({"min_scene_frames": 30}), frames) == []
    # a dimmer second half of the sky scene is not a cut at 27, but is at 5
    sky = three_scenes()[:20] + [(f * 0.8).astype(np.uint8) for f in three_scenes(seed=3)[:20]]
    dim = as_request(sky)
    assert _detect(strict, dim) == []
    assert [c.frame_index for c in _detect(strict, dim, threshold=5.0)] == [20]


def test_wrapper_equals_scenedetect_on_a_lossless_video_file(app: SceneChanges, tmp_path: Path) -> None:
    from scenedetect import ContentDetector, SceneManager, StatsManager, open_video

    frames = three_scenes() + slow_fade() + steady_pan()
    path = str(tmp_path / "video.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"FFV1"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame[:, :, ::-1].copy())  # OpenCV writes BGR
    writer.release()

    manager = SceneManager(stats_manager=StatsManager())
    manager.add_detector(ContentDetector(threshold=27.0, min_scene_len=15))
    manager.detect_scenes(video=open_video(path))
    scenes = manager.get_scene_list()
    direct_cuts = [start.frame_num for start, _ in scenes[1:]]
    direct_scores = [manager.stats_manager.get_metrics(i, ["content_val"])[0] for i in direct_cuts]

    encoded = video("three scenes") + video("slow fade") + video("steady pan")
    ours = _detect(app, [(data, mime, i / FPS) for i, (data, mime, _) in enumerate(encoded)])
    assert direct_cuts == [20, 40, 60, 120]  # the three scenes, and the cuts into the fade and into the pan
    assert [c.frame_index for c in ours] == direct_cuts
    assert [c.score for c in ours] == pytest.approx(direct_scores, rel=1e-9)


def test_single_frame_has_no_cut(app: SceneChanges) -> None:
    assert _detect(app, video("three scenes")[:1]) == []


def test_bad_input_is_refused_and_the_deployment_keeps_serving() -> None:
    app = SceneChanges.func_or_class({"max_frames": 30})
    good = as_request(three_scenes(length=10))
    with pytest.raises(InvalidArgument, match="no frames"):
        _detect(app, [])
    with pytest.raises(ResourceExhausted, match="31 frames in one request; the limit is 30"):
        _detect(app, good + good[:1])
    resized = list(good)
    small = np.zeros((HEIGHT // 2, WIDTH // 2, 3), np.uint8)
    resized[7] = (_png(small), "image/png", resized[7][2])
    with pytest.raises(InvalidArgument, match=r"frame 7 is 160x90 but frame 0 is 320x180"):
        _detect(app, resized)
    repeated = list(good)
    repeated[5] = (repeated[5][0], "image/png", repeated[4][2])
    with pytest.raises(InvalidArgument, match=r"frame 5 has timestamp .* not after frame 4"):
        _detect(app, repeated)
    backwards = list(reversed(good))
    with pytest.raises(InvalidArgument, match="frame 1 has timestamp"):
        _detect(app, backwards)
    corrupt = list(good)
    corrupt[3] = (b"\x89PNG\r\n\x1a\nbroken", "image/png", corrupt[3][2])
    with pytest.raises(InvalidArgument, match="frame 3: the bytes are not a readable image"):
        _detect(app, corrupt)
    wrong_type = list(good)
    wrong_type[2] = (wrong_type[2][0], "video/mp4", wrong_type[2][2])
    with pytest.raises(InvalidArgument, match="frame 2: unsupported image type"):
        _detect(app, wrong_type)
    with pytest.raises(InvalidArgument, match="frame 0 must be"):
        _detect(app, [("not bytes", "image/png", 0.0)])
    with pytest.raises(InvalidArgument, match="frame 1 has timestamp nan"):
        _detect(app, [good[0], (good[1][0], "image/png", float("nan"))])
    with pytest.raises(InvalidArgument, match="threshold"):
        _detect(app, good, threshold=-1.0)
    assert [c.frame_index for c in _detect(app, good)] == []  # 10-frame scenes: under the 15-frame minimum
    assert [c.frame_index for c in _detect(SceneChanges.func_or_class({"min_scene_frames": 5}), good)] == [10, 20]
    assert app.info()["max_frames"] == 30
