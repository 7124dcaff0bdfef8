"""Scene cuts in a sequence of video frames: PySceneDetect's ContentDetector fed in-memory frames one by one.

In (by handle): `detect(frames, threshold=0.0)`, each frame `(encoded image bytes, mime type, timestamp_s)` in
playback order; `threshold` 0 means the config's. Out: one `SceneCutResult(frame_index, timestamp_s, score)` per
cut, where `frame_index` is the first frame of the new scene and `score` ContentDetector's frame score there (the
mean HSV change from the frame before, 0 to 255).

PySceneDetect 0.7 takes frames without a video file: `ContentDetector.process_frame(FrameTimecode, bgr_ndarray)`
returns the cuts it has confirmed so far (its min-scene-length filter may confirm a cut a few frames late) and
`post_process` flushes the rest; frame scores come from a `StatsManager` attached to the detector. Frames are
downscaled exactly as PySceneDetect's own `SceneManager` does (to about 256 px on the longest side, bilinear), so
the cuts equal `scenedetect.detect()` on a lossless video of the same frames. Frames are decoded one at a time in a
worker thread: a request of `max_frames` frames never holds more than two decoded frames.
"""

from __future__ import annotations

import asyncio
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.config import SceneChangesConfig
from almquist.errors import AlmquistError, InvalidArgument, ResourceExhausted
from almquist.images import decode_image


@dataclass
class SceneCutResult:
    """A cut: the first frame of the new scene, its timestamp, and the detector's score for it."""

    frame_index: int
    timestamp_s: float
    score: float


class SceneCutEngine(Protocol):
    name: str

    def __init__(self, config: SceneChangesConfig) -> None: ...

    def cuts(self, frames: Iterator[np.ndarray], threshold: float) -> list[tuple[int, float]]:
        """(frame index, score) of each cut in a stream of same-sized BGR uint8 frames."""
        ...


class ContentDetectorEngine:
    """PySceneDetect's `ContentDetector` with the config's minimum scene length, one detector per request."""

    def __init__(self, config: SceneChangesConfig) -> None:
        import scenedetect

        self._config = config
        self.name = f"scenedetect-{scenedetect.__version__} ContentDetector"

    def cuts(self, frames: Iterator[np.ndarray], threshold: float) -> list[tuple[int, float]]:
        import cv2
        from scenedetect import ContentDetector, FrameTimecode, StatsManager
        from scenedetect.scene_manager import compute_downscale_factor

        detector = ContentDetector(threshold=threshold, min_scene_len=self._config.min_scene_frames)
        stats = StatsManager()
        stats.register_metrics(detector.get_metrics())
        detector.stats_manager = stats
        found: list[FrameTimecode] = []
        position: FrameTimecode | None = None
        factor = 1.0
        for index, frame in enumerate(frames):
            if index == 0:
                factor = compute_downscale_factor(max(frame.shape[1], frame.shape[0]))
            if factor > 1.0:  # SceneManager's own downscaling, so scores match a scenedetect run on a file
                size = (max(1, round(frame.shape[1] / factor)), max(1, round(frame.shape[0] / factor)))
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
            # frame numbers are what the detector counts (min_scene_len is in frames); the rate only names seconds
            position = FrameTimecode(index, fps=1.0)
            found += detector.process_frame(position, frame)
        if position is not None:
            found += detector.post_process(position)
        key = ContentDetector.FRAME_SCORE_KEY
        return [(cut.frame_num, float(stats.get_metrics(cut.frame_num, [key])[0])) for cut in found]


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_frames(frames: list[tuple[bytes, str, float]], threshold: float, config: SceneChangesConfig) -> None:
    if not frames:
        raise InvalidArgument("no frames: send at least two frames of the video, in playback order")
    if len(frames) > config.max_frames:
        raise ResourceExhausted(
            f"{len(frames)} frames in one request; the limit is {config.max_frames}: split the video into chunks"
        )
    if not _is_number(threshold) or not math.isfinite(threshold) or threshold < 0:
        raise InvalidArgument(f"threshold must be 0 (the default, {config.threshold}) or a positive number")
    previous = -math.inf
    for i, frame in enumerate(frames):
        if not isinstance(frame, (tuple, list)) or len(frame) != 3:
            raise InvalidArgument(f"frame {i} must be (image bytes, mime type, timestamp_s)")
        data, mime_type, timestamp = frame
        if not isinstance(data, (bytes, bytearray, memoryview)) or not isinstance(mime_type, str):
            raise InvalidArgument(f"frame {i} must be (image bytes, mime type, timestamp_s)")
        if not _is_number(timestamp) or not math.isfinite(timestamp) or timestamp < 0:
            raise InvalidArgument(f"frame {i} has timestamp {timestamp!r}; send seconds >= 0")
        if timestamp <= previous:
            raise InvalidArgument(
                f"frame {i} has timestamp {timestamp} s, not after frame {i - 1}'s {previous} s: "
                "send frames in playback order with increasing timestamps"
            )
        previous = timestamp


@serve.deployment(name="SceneChanges", ray_actor_options={"num_cpus": 0.25})
class SceneChanges:
    """Serves cut detection over frame sequences; see the module docstring."""

    def __init__(self, config: SceneChangesConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = SceneChangesConfig.model_validate(config)
        self._engine: SceneCutEngine = (engine_cls or ContentDetectorEngine)(self._config)

    async def detect(self, frames: list[tuple[bytes, str, float]], threshold: float = 0.0) -> list[SceneCutResult]:
        validate_frames(frames, threshold, self._config)
        threshold = float(threshold) or self._config.threshold
        cuts = await asyncio.to_thread(self._engine.cuts, self._decoded(frames), threshold)
        return [SceneCutResult(index, float(frames[index][2]), score) for index, score in cuts]

    def _decoded(self, frames: list[tuple[bytes, str, float]]) -> Iterator[np.ndarray]:
        """Each frame as a BGR uint8 array, decoded only when the detector asks for it; all of one size."""
        first_size: tuple[int, int] | None = None
        for i, (data, mime_type, _) in enumerate(frames):
            try:
                image = decode_image(data, mime_type, self._config.images)
            except AlmquistError as error:
                raise type(error)(f"frame {i}: {error.message}") from None
            if first_size is None:
                first_size = image.size
            elif image.size != first_size:
                raise InvalidArgument(
                    f"frame {i} is {image.size[0]}x{image.size[1]} but frame 0 is {first_size[0]}x{first_size[1]}: "
                    "every frame of a video must have the same size"
                )
            yield np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # RGB -> BGR, as OpenCV decodes video

    def info(self) -> dict[str, Any]:
        config = self._config
        return {"engine": self._engine.name, "threshold": config.threshold, "max_frames": config.max_frames}
