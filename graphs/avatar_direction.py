"""The avatar's direction: which emotion, gesture, camera shot and scene go with what it says.

In: the router's topic for a turn, the emotion heard in the user's voice, and each sentence of the answer as the
avatar starts to speak it. Out: `Direction`s, each the commands (Emotion, Gesture, Camera, Environment) to send at
that moment; nothing is repeated while it holds. Rules, not a model: cue words and punctuation choose the emotion
and the gesture, an emotion at least `close_up_intensity` strong is an emotional moment (a close-up), a new scene
is shown wide first, and the topic picks the scene (`AvatarConfig.scenes`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from almquist.config.avatar import AvatarConfig

_CUES: dict[str, tuple[str, ...]] = {
    "joy": ("love", "great", "wonderful", "glad", "happy", "fantastic", "enjoy", "fun", "beautiful", "brilliant",
            "excellent", "delight", "favorite", "favourite", "best", "masterpiece", "classic", "congratulations"),
    "excitement": ("amazing", "incredible", "wow", "thrilling", "awesome", "spectacular", "epic", "unbelievable"),
    "sadness": ("sorry", "sad", "unfortunately", "died", "death", "loss", "lost", "tragic", "miss", "passed away",
                "regret", "afraid not"),
    "anger": ("outrageous", "unfair", "hate", "furious", "angry", "scandal"),
    "fear": ("scary", "afraid", "horror", "frightening", "terrifying", "dangerous"),
    "surprise": ("surprising", "surprisingly", "believe it or not", "unexpected", "actually", "turns out"),
    "disgust": ("disgusting", "gross", "awful", "revolting"),
}  # fmt: skip
_WORDS = {kind: re.compile(r"\b(?:" + "|".join(map(re.escape, cues)) + r")\b", re.I) for kind, cues in _CUES.items()}

# How the avatar answers the way the user sounds (deployments/voice_emotion labels): with warmth, not a mirror.
_EMPATHY = {
    "sad": ("sadness", 0.4),
    "happy": ("joy", 0.5),
    "surprised": ("surprise", 0.35),
    "fearful": ("sadness", 0.3),
    "angry": ("neutral", 0.0),
}

# TTS prosody for an emotion (deployments/tts EMOTIONS)
SPEECH_EMOTION = {"joy": "happy", "excitement": "happy", "sadness": "sad", "anger": "angry", "fear": "sad"}

_GESTURES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(?:hello|hi|hey|welcome|goodbye|bye)\b", re.I), "wave"),
    (re.compile(r"\b(?:not sure|don't know|do not know|no idea|hard to say|maybe)\b", re.I), "shrug"),
    (re.compile(r"\b(?:yes|exactly|right|indeed|of course|absolutely|correct)\b", re.I), "nod"),
    (re.compile(r"\b(?:look at|over there|this one|here is|here's)\b", re.I), "point"),
]


@dataclass(frozen=True)
class SentenceMood:
    """The emotion a sentence shows (EmotionKind name, lower case) and how strongly."""

    kind: str
    intensity: float


def sentence_mood(sentence: str) -> SentenceMood:
    """Cue words choose the emotion; more cues and an exclamation mark make it stronger."""
    counts = {kind: len(pattern.findall(sentence)) for kind, pattern in _WORDS.items()}
    kind, hits = max(counts.items(), key=lambda item: item[1])
    if hits == 0:
        return SentenceMood("neutral", 0.0)
    exclaimed = sentence.rstrip().endswith("!")
    if kind == "joy" and exclaimed:
        kind = "excitement"
    return SentenceMood(kind, min(0.9, 0.35 + 0.2 * (hits - 1) + (0.2 if exclaimed else 0.0)))


def sentence_gesture(sentence: str, first: bool) -> str:
    for pattern, gesture in _GESTURES:
        if pattern.search(sentence):
            return gesture
    mood = sentence_mood(sentence)
    if mood.kind in ("joy", "excitement") and mood.intensity >= 0.55:
        return "thumbs_up"
    return "open_palm" if first and sentence.rstrip().endswith("?") else ""


@dataclass
class Direction:
    """Commands to send at one moment; None where nothing changes."""

    environment: tuple[str, str] | None = None  # (scene, reason)
    camera: tuple[str, str, float] | None = None  # (shot, reason, transition_s)
    emotion: tuple[str, float, float] | None = None  # (kind, intensity, blend_s)
    gesture: tuple[str, float, float] | None = None  # (name, intensity, duration_s)
    speech_emotion: str = ""  # the TTS prosody for the sentence


@dataclass
class Director:
    """Keeps what the avatar shows now (scene, shot, emotion) over a stream, so only changes become commands."""

    config: AvatarConfig
    scene: str = ""
    shot: str = ""
    emotion: tuple[str, float] | None = None  # None until the first turn: it then says its (neutral) start
    _sentences: int = field(default=0, repr=False)

    def turn_start(self, topic: str, user_emotion: str = "") -> Direction:
        """At the start of a turn's speech: the scene of the topic, the shot, an empathic emotion."""
        self._sentences = 0
        direction = Direction()
        scene = self.config.scenes.get(topic) or self.config.scenes.get("general", "library")
        if scene != self.scene:
            direction.environment = (scene, f"topic: {topic or 'general'}")
            direction.camera = ("wide", f"new scene: {scene.replace('_', ' ')}", 0.0)
            self.scene, self.shot = scene, "wide"
        elif self.shot != "medium":
            direction.camera = ("medium", "conversation", 0.8)
            self.shot = "medium"
        kind, intensity = _EMPATHY.get(user_emotion, ("neutral", 0.0))
        if (kind, intensity) != self.emotion:
            direction.emotion = (kind, intensity, 0.4)
            self.emotion = (kind, intensity)
        return direction

    def sentence(self, sentence: str) -> Direction:
        """As a sentence starts: its emotion, its gesture, and a close-up for an emotional moment."""
        first = self._sentences == 0
        self._sentences += 1
        direction = Direction()
        mood = sentence_mood(sentence)
        if mood.kind != "neutral" and (mood.kind, mood.intensity) != self.emotion:
            direction.emotion = (mood.kind, mood.intensity, 0.3)
            self.emotion = (mood.kind, mood.intensity)
        elif mood.kind == "neutral" and self.emotion is not None and self.emotion[0] != "neutral" and not first:
            direction.emotion = ("neutral", 0.0, 0.8)  # let a feeling fade once the answer moves on
            self.emotion = ("neutral", 0.0)
        shown = mood if mood.kind != "neutral" else None
        if shown is not None and shown.intensity >= self.config.close_up_intensity:
            if self.shot != "close_up":
                direction.camera = ("close_up", f"emotional moment: {shown.kind}", 0.6)
                self.shot = "close_up"
        elif self.shot == "close_up" or (self.shot == "wide" and not first):  # a new scene: wide for a sentence
            reason = "speaking" if self.shot == "wide" else "back to the conversation"
            direction.camera = ("medium", reason, 1.0)
            self.shot = "medium"
        gesture = sentence_gesture(sentence, first)
        if gesture:
            direction.gesture = (gesture, 0.7, 1.2)
        kind, intensity = self.emotion or ("neutral", 0.0)
        direction.speech_emotion = SPEECH_EMOTION.get(kind, "") if intensity >= 0.35 else ""
        return direction
