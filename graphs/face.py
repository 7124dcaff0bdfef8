"""The avatar's face, frame by frame: lip sync from phoneme timings, emotion, and idle motion.

In: timed phonemes from the TTS deployment (name, start, duration on the audio clock), the emotions the avatar
shows, and the frame times to draw. Out: for each frame 52 ARKit weights in [0, 1] (graphs.visemes.ARKIT_NAMES
order) and a head rotation (pitch, yaw, roll in degrees).

- Lip sync: phoneme -> viseme(s) (graphs.visemes), then coarticulation with dominance functions (Cohen & Massaro):
  each viseme pulls the mouth towards its pose with its dominance inside its interval, decaying exponentially
  outside it, and a frame is the dominance-weighted mean of the poses near it. Neighbours therefore ramp into each
  other instead of snapping, and strong visemes (lips closing for p, b, m) win over weak ones (tongue-only t, n).
  A constant rest term pulls the mouth closed where no viseme is near (pauses, before and after speech).
- Emotion: each kind has a pose (a smile for joy, raised inner brows for sadness...), scaled by intensity and
  blended in linearly over the event's blend time from the one before.
- Idle motion, so the face is never frozen: blinks at random intervals (seeded), breathing, and a slow head sway
  made of incommensurate sines. All of it is a function of the stream's clock, so frames can be drawn in any
  order and a turn continues the motion of the one before.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from almquist.config.avatar import AvatarConfig
from graphs.visemes import (
    ARKIT_INDEX,
    ARKIT_NAMES,
    VISEME_DOMINANCE,
    VISEME_POSES,
    VISEMES,
    phoneme_visemes,
    pose_vector,
)
from graphs.visemes import (
    both_sides as _both,
)

_POSES = np.array([pose_vector(VISEME_POSES[v]) for v in VISEMES], dtype=np.float32)
_DOMINANCE = np.array([VISEME_DOMINANCE[v] for v in VISEMES], dtype=np.float32)
_VISEME_ID = {name: index for index, name in enumerate(VISEMES)}
_REST = 0.04  # dominance of the closed, relaxed mouth everywhere: wins only where no viseme is near
_DIPHTHONG_FIRST = 0.55  # share of a diphthong's time its first vowel holds


# Each emotion's face at full intensity (EmotionKind names, lower case, without the prefix).
EMOTION_POSES: dict[str, dict[str, float]] = {
    "neutral": {},
    "joy": {**_both(0.6, "mouthSmile"), **_both(0.35, "cheekSquint"), **_both(0.15, "eyeSquint")},
    "sadness": {"browInnerUp": 0.6, **_both(0.45, "mouthFrown"), **_both(0.15, "eyeSquint"), "mouthShrugLower": 0.2},
    "anger": {
        **_both(0.7, "browDown"), **_both(0.35, "noseSneer"), **_both(0.3, "mouthPress"), **_both(0.25, "eyeSquint")
    },
    "fear": {"browInnerUp": 0.7, **_both(0.55, "eyeWide"), **_both(0.3, "mouthStretch"), **_both(0.2, "browOuterUp")},
    "surprise": {"browInnerUp": 0.55, **_both(0.7, "browOuterUp"), **_both(0.6, "eyeWide")},
    "disgust": {**_both(0.6, "noseSneer"), **_both(0.4, "mouthUpperUp"), **_both(0.3, "browDown")},
    "excitement": {
        **_both(0.7, "mouthSmile"), **_both(0.3, "eyeWide"), **_both(0.3, "browOuterUp"), **_both(0.3, "cheekSquint")
    },
}  # fmt: skip


def pose(weights: dict[str, float]) -> np.ndarray:
    return np.array(pose_vector(weights), dtype=np.float32)


_EMOTION_VECTORS = {kind: pose(weights) for kind, weights in EMOTION_POSES.items()}


@dataclass(frozen=True)
class VisemeSpan:
    """A viseme held from `start_s` to `end_s` on the audio clock."""

    viseme: str
    start_s: float
    end_s: float


def viseme_spans(phonemes: Sequence[tuple[str, float, float]], kinds: dict[str, str] | None = None) -> list[VisemeSpan]:
    """(phoneme, start_s, duration_s) in time order -> viseme spans; a diphthong is split in two, and a run of one
    viseme (e.g. "m b") is merged into one span."""
    spans: list[VisemeSpan] = []
    for name, start, duration in phonemes:
        if duration <= 0:
            continue
        shown = phoneme_visemes(name, (kinds or {}).get(name, ""))
        if len(shown) == 1:
            pieces = [(shown[0], start, start + duration)]
        else:
            middle = start + duration * _DIPHTHONG_FIRST
            pieces = [(shown[0], start, middle), (shown[1], middle, start + duration)]
        for viseme, begin, end in pieces:
            if spans and spans[-1].viseme == viseme and abs(spans[-1].end_s - begin) < 1e-6:
                spans[-1] = VisemeSpan(viseme, spans[-1].start_s, end)
            else:
                spans.append(VisemeSpan(viseme, begin, end))
    return spans


def mouth_weights(spans: Sequence[VisemeSpan], times: np.ndarray, decay_s: float) -> np.ndarray:
    """(len(times), 52) mouth weights by dominance-weighted blending of the viseme poses (see the module doc)."""
    out = np.zeros((len(times), len(ARKIT_NAMES)), dtype=np.float32)
    if not spans or not len(times):
        return out
    ids = np.array([_VISEME_ID[span.viseme] for span in spans])
    starts = np.array([span.start_s for span in spans])
    ends = np.array([span.end_s for span in spans])
    t = np.asarray(times, dtype=np.float64)[:, None]
    distance = np.maximum(0.0, np.maximum(starts[None, :] - t, t - ends[None, :]))
    dominance = _DOMINANCE[ids][None, :] * np.exp(-distance / decay_s)
    return ((dominance @ _POSES[ids]) / (dominance.sum(axis=1) + _REST)[:, None]).astype(np.float32)


@dataclass(frozen=True)
class EmotionChange:
    """From `time_s`, blend to `kind` at `intensity` over `blend_s` seconds."""

    time_s: float
    kind: str
    intensity: float
    blend_s: float


class EmotionTrack:
    """The emotions shown over a stream, in time order; `at(times)` is the blended emotion pose at each time."""

    def __init__(self) -> None:
        self._changes: list[EmotionChange] = []

    def add(self, change: EmotionChange) -> None:
        if change.kind not in _EMOTION_VECTORS:
            raise ValueError(f"unknown emotion {change.kind!r}")
        if self._changes and change.time_s < self._changes[-1].time_s:
            raise ValueError("emotion changes must come in time order")
        self._changes.append(change)

    def _target(self, index: int) -> np.ndarray:
        if index < 0:
            return _EMOTION_VECTORS["neutral"]
        change = self._changes[index]
        return _EMOTION_VECTORS[change.kind] * change.intensity

    def _at(self, time_s: float) -> np.ndarray:
        index = -1
        for i, change in enumerate(self._changes):
            if change.time_s <= time_s:
                index = i
        if index < 0:
            return self._target(-1)
        change = self._changes[index]
        # blend from where the previous blend stood at this change's time (it may not have finished)
        start = self._at(change.time_s - 1e-9) if index > 0 and change.blend_s > 0 else self._target(index - 1)
        progress = 1.0 if change.blend_s <= 0 else min(1.0, (time_s - change.time_s) / change.blend_s)
        return start + (self._target(index) - start) * progress

    def at(self, times: np.ndarray) -> np.ndarray:
        return np.stack([self._at(float(t)) for t in times]) if len(times) else np.zeros((0, len(ARKIT_NAMES)))

    def forget_before(self, time_s: float) -> None:
        """Drops changes no frame at or after `time_s` needs (keeps the stream's memory bounded)."""
        while len(self._changes) > 2 and self._changes[1].time_s + self._changes[1].blend_s < time_s:
            self._changes.pop(0)


_BLINK = (pose(_both(1.0, "eyeBlink")), ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"])
_BREATH = pose(_both(0.05, "noseSneer"))


class IdleMotion:
    """Blinks, breathing and head sway as functions of the stream's clock (seeded: the same seed, the same face)."""

    def __init__(self, config: AvatarConfig, seed: int | None = None) -> None:
        self._config = config
        self._random = random.Random(seed)
        self._phases = [self._random.uniform(0, 2 * math.pi) for _ in range(6)]
        self._blinks: list[float] = []
        self._next_blink = self._random.uniform(*config.blink_interval_s) / 2

    def _blinks_until(self, time_s: float) -> np.ndarray:
        while self._next_blink <= time_s + self._config.blink_s:
            self._blinks.append(self._next_blink)
            self._next_blink += self._random.uniform(*self._config.blink_interval_s)
        return np.array(self._blinks)

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weights (T, 52), head (T, 3) pitch/yaw/roll in degrees) at `times`."""
        t = np.asarray(times, dtype=np.float64)
        weights = np.zeros((len(t), len(ARKIT_NAMES)), dtype=np.float32)
        head = np.zeros((len(t), 3), dtype=np.float32)
        if not len(t):
            return weights, head
        config = self._config
        # frames are drawn in time order: blinks that ended before these frames are done with (bounded memory)
        self._blinks = [b for b in self._blinks if b + config.blink_s >= float(t.min())]
        blinks = self._blinks_until(float(t.max()))
        if blinks.size:
            # a blink closes fast (35 % of it) and opens slower: a triangle on each blink's start
            since = t[:, None] - blinks[None, :]
            close, length = config.blink_s * 0.35, config.blink_s
            shape = np.where(since < close, since / close, 1 - (since - close) / (length - close))
            amount = np.clip(np.where((since >= 0) & (since <= length), shape, 0), 0, 1).max(axis=1)
            weights += amount[:, None].astype(np.float32) * _BLINK[0]
        breath = 0.5 * (1 + np.sin(2 * np.pi * t / config.breathing_period_s + self._phases[0]))
        weights += breath[:, None].astype(np.float32) * _BREATH
        p = self._phases
        sway = config.head_sway_deg
        head[:, 0] = sway * (0.3 * np.sin(2 * np.pi * 0.11 * t + p[1]) + 0.2 * np.sin(2 * np.pi * 0.27 * t + p[2]))
        head[:, 0] += 0.4 * breath  # the head rises a little with each breath
        head[:, 1] = sway * (0.6 * np.sin(2 * np.pi * 0.07 * t + p[3]) + 0.3 * np.sin(2 * np.pi * 0.19 * t + p[4]))
        head[:, 2] = sway * 0.25 * np.sin(2 * np.pi * 0.13 * t + p[5])
        return weights, head


@dataclass
class Frames:
    """Face frames on the stream's grid: times (k / fps), weights (T, 52) in [0, 1], head (T, 3) in degrees."""

    times: np.ndarray
    weights: np.ndarray
    head: np.ndarray


class FaceAnimator:
    """Draws a stream's face frames: lip sync + emotion + idle motion on the grid k / fps of the audio clock."""

    def __init__(self, config: AvatarConfig, seed: int | None = None) -> None:
        self._config = config
        self.idle = IdleMotion(config, seed)
        self.emotions = EmotionTrack()

    def grid(self, start_s: float, end_s: float) -> np.ndarray:
        """Frame times k / fps with start_s <= time < end_s."""
        fps = self._config.fps
        first, last = math.ceil(start_s * fps - 1e-9), math.ceil(end_s * fps - 1e-9)
        return np.arange(first, last, dtype=np.int64) / fps

    def frames(self, start_s: float, end_s: float, spans: Sequence[VisemeSpan]) -> Frames:
        times = self.grid(start_s, end_s)
        idle, head = self.idle.at(times)
        weights = mouth_weights(spans, times, self._config.coarticulation_s) + idle + self.emotions.at(times)
        return Frames(times, np.clip(weights, 0.0, 1.0).astype(np.float32), head)
