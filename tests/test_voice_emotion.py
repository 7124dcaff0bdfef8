"""Voice emotion: a tiny seeded wav2vec2 classifier saved to a folder, served through the deployment's real loading
path, checked against transformers' own audio-classification pipeline (and the model called directly) on the same
audio; short speech, long speech (averaged pieces), label case, bad input and recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.voice_emotion import EmotionResult, VoiceEmotion
from tests.tiny_voice_emotion import EMOTIONS, save_tiny_voice_emotion

RATE = 16000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding signal: a wobbling 140 Hz tone with harmonics under a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * tone * envelope + 0.01 * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_voice_emotion(tmp_path_factory.mktemp("voice_emotion") / "tiny")


@pytest.fixture(scope="module")
def classifier(model_path: str):
    return VoiceEmotion.func_or_class({"model": model_path})


@pytest.fixture(scope="module")
def reference(model_path: str):
    from transformers import pipeline

    return pipeline("audio-classification", model=model_path, device="cpu")


def classify(deployment, audio) -> EmotionResult:
    return asyncio.run(deployment.classify(audio))


def test_equals_transformers_pipeline(classifier, reference) -> None:
    audio = speechlike(2.0)
    result = classify(classifier, audio)
    expected = {r["label"]: r["score"] for r in reference(audio, top_k=None)}
    assert set(result.scores) == set(EMOTIONS)
    for label in EMOTIONS:
        assert result.scores[label] == pytest.approx(expected[label], abs=1e-6)
    best = max(expected, key=expected.__getitem__)
    assert result.label == best and result.score == pytest.approx(expected[best], abs=1e-6)
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in result.scores.values())


def test_equals_model_called_directly(classifier, model_path: str) -> None:
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    extractor = AutoFeatureExtractor.from_pretrained(model_path)
    model = AutoModelForAudioClassification.from_pretrained(model_path).eval()
    audio = speechlike(1.3, seed=5)
    with torch.inference_mode():
        logits = model(**extractor(audio, sampling_rate=RATE, return_tensors="pt")).logits[0]
    expected = logits.softmax(-1).numpy()
    result = classify(classifier, audio)
    np.testing.assert_allclose([result.scores[label] for label in EMOTIONS], expected, atol=1e-6)
    # different audio, different probabilities: the model really listens
    other = classify(classifier, speechlike(1.3, seed=6) * 0.1 + np.float32(0.05))
    assert other.scores != result.scores


def test_long_speech_averages_pieces(model_path: str, reference) -> None:
    deployment = VoiceEmotion.func_or_class({"model": model_path, "window_s": 1.0})
    audio = speechlike(2.5, seed=2)
    pieces = np.array_split(audio, 3)  # 2.5 s in pieces of at most 1 s: three of 0.83 s
    expected = np.zeros(len(EMOTIONS))
    for piece in pieces:
        scores = {r["label"]: r["score"] for r in reference(piece, top_k=None)}
        expected += piece.size / audio.size * np.array([scores[label] for label in EMOTIONS])
    result = classify(deployment, audio)
    np.testing.assert_allclose([result.scores[label] for label in EMOTIONS], expected, atol=1e-6)
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_short_speech_is_not_classified(classifier) -> None:
    result = classify(classifier, speechlike(0.3))  # under min_seconds (0.5)
    assert result == EmotionResult("neutral", 0.0, {})


def test_labels_lower_cased(tmp_path: Path) -> None:
    path = save_tiny_voice_emotion(tmp_path / "upper", labels=("NEUTRAL", "Happy", "sad", "Angry"))
    deployment = VoiceEmotion.func_or_class({"model": path})
    assert deployment.info()["labels"] == ["neutral", "happy", "sad", "angry"]
    result = classify(deployment, speechlike(1.0))
    assert set(result.scores) == {"neutral", "happy", "sad", "angry"} and result.label in result.scores


def test_info(classifier, model_path: str) -> None:
    info = classifier.info()
    assert info["labels"] == list(EMOTIONS)
    assert info["model"] == Path(model_path).name and info["sample_rate_hz"] == RATE
    assert info["min_seconds"] == 0.5 and info["window_s"] == 10.0


def test_bad_input_then_still_works(model_path: str) -> None:
    deployment = VoiceEmotion.func_or_class({"model": model_path, "audio": {"max_seconds": 3.0}})
    with pytest.raises(InvalidArgument, match="empty"):
        classify(deployment, np.zeros(0, np.float32))
    with pytest.raises(InvalidArgument, match="NaN"):
        classify(deployment, np.full(RATE, np.nan, np.float32))
    with pytest.raises(InvalidArgument, match="floats"):
        classify(deployment, (speechlike(1.0) * 32767).astype(np.int16))
    with pytest.raises(InvalidArgument, match="mono"):
        classify(deployment, np.stack([speechlike(1.0), speechlike(1.0)]))
    with pytest.raises(ResourceExhausted, match="limit is 3 s"):
        classify(deployment, speechlike(4.0))
    result = classify(deployment, speechlike(1.0))
    assert result.label in EMOTIONS and sum(result.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        VoiceEmotion.func_or_class({"model": str(tmp_path / "nothing")})
