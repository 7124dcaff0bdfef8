"""Emotion heard in a voice: a wav2vec2-style audio classifier loaded through transformers from a path.

In (by handle): `classify(audio)`, float32 mono 16 kHz speech. Out: `EmotionResult(label, score, scores)`: the most
likely emotion, its probability, and every label's probability (softmax over the model's logits, summing to 1).
Labels are the model's `config.id2label`, lower-cased ("neutral", "happy", ...), whatever case the checkpoint uses.

Speech shorter than the config's `min_seconds` is too little to judge: it answers `label="neutral"`, `score=0.0`
and empty `scores` without running the model (a caller can tell "not classified" by the empty scores). Speech
longer than `window_s` is cut into equal pieces no longer than that, each classified on its own, and the
probabilities averaged weighted by length: wav2vec2's attention grows with the square of the length, and emotion
models are trained on clips of a few seconds. A clip within `window_s` gives exactly what transformers'
`pipeline("audio-classification")` gives.

The engine is `AutoFeatureExtractor.from_pretrained(path)` + `AutoModelForAudioClassification.from_pretrained(path)`
(local files only); the cluster profile points `model` at a real speech-emotion checkpoint (e.g. a wav2vec2 model
fine-tuned for emotion, copied to a volume). Bad input (empty, NaN, not 1-D float, too long) is INVALID_ARGUMENT /
RESOURCE_EXHAUSTED and the replica keeps serving.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.audio import check_samples, resample
from almquist.config import model_name, resolve_model_ref
from almquist.config.speech import VoiceEmotionConfig

RATE_HZ = 16000
NOT_CLASSIFIED = "neutral"  # the label of speech too short to classify (score 0, no scores)


@dataclass
class EmotionResult:
    """The most likely emotion, its probability, and each label's probability (empty when not classified)."""

    label: str
    score: float
    scores: dict[str, float]


class EmotionEngine(Protocol):
    name: str
    labels: list[str]  # lower-cased, in the model's output order
    sample_rate: int  # what the model takes; audio is resampled to it

    def __init__(self, config: VoiceEmotionConfig) -> None: ...

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Softmax probabilities, one per label, of one mono clip at `sample_rate`."""
        ...


class TransformersEmotionEngine:
    """transformers' `AutoFeatureExtractor` + `AutoModelForAudioClassification` from a local folder."""

    def __init__(self, config: VoiceEmotionConfig) -> None:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        path = resolve_model_ref(config.model)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"voice emotion model {path!r} is not a folder: point `model` at a saved model")
        self._extractor = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        self._model = AutoModelForAudioClassification.from_pretrained(path, local_files_only=True)
        self._model.to(config.device).eval()
        self._device = config.device
        id2label = self._model.config.id2label
        self.labels = [str(id2label[i]).lower() for i in range(len(id2label))]
        self.sample_rate = int(getattr(self._extractor, "sampling_rate", RATE_HZ) or RATE_HZ)
        self.name = model_name(config.model)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        import torch

        inputs = self._extractor(audio, sampling_rate=self.sample_rate, return_tensors="pt").to(self._device)
        with torch.inference_mode():
            logits = self._model(**inputs).logits
        return logits[0].float().softmax(-1).cpu().numpy()


@serve.deployment(name="VoiceEmotion", ray_actor_options={"num_cpus": 0.5})
class VoiceEmotion:
    """Serves one speech-emotion classifier; see the module docstring."""

    def __init__(self, config: VoiceEmotionConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = VoiceEmotionConfig.model_validate(config)
        self._engine: EmotionEngine = (engine_cls or TransformersEmotionEngine)(self._config)

    async def classify(self, audio: np.ndarray) -> EmotionResult:
        audio = check_samples(audio, RATE_HZ, self._config.audio)
        if audio.size < self._config.min_seconds * RATE_HZ:
            return EmotionResult(NOT_CLASSIFIED, 0.0, {})
        probabilities = await asyncio.to_thread(self._probabilities, audio)
        scores: dict[str, float] = {}
        for label, p in zip(self._engine.labels, probabilities, strict=True):
            scores[label] = scores.get(label, 0.0) + float(p)  # two labels differing only in case are one emotion
        label = max(scores, key=scores.__getitem__)
        return EmotionResult(label, scores[label], scores)

    def _probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the whole clip: one call within `window_s`, else the length-weighted mean over equal
        pieces no longer than `window_s`."""
        audio = resample(audio, RATE_HZ, self._engine.sample_rate)
        window = self._config.window_s * self._engine.sample_rate
        pieces = np.array_split(audio, max(1, math.ceil(audio.size / window)))
        weights = np.array([piece.size for piece in pieces], dtype=np.float64)
        rows = np.stack([self._engine.probabilities(piece) for piece in pieces])
        return (weights[:, None] * rows).sum(axis=0) / weights.sum()

    def info(self) -> dict[str, Any]:
        config = self._config
        return {
            "engine": "transformers AutoModelForAudioClassification",
            "model": self._engine.name,
            "labels": list(dict.fromkeys(self._engine.labels)),
            "sample_rate_hz": RATE_HZ,
            "min_seconds": config.min_seconds,
            "window_s": config.window_s,
            "max_seconds": config.audio.max_seconds,
        }
