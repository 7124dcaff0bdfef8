"""Speaker diarization: a two-voice conversation synthesised here with espeak-ng (a low male and a high female
voice taking turns A B A B A B with pauses), diarized by the resemblyzer engine and scored against the known turns;
the pyannote engine on a tiny random pipeline built here (PyanNet segmentation, WeSpeaker ResNet34 embedding, a
PLDA, community-1's layout) compared with the same pipeline called directly; helpers, bad input and recovery."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from almquist.audio import resample
from almquist.config.speech import DiarizationConfig
from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.diarization import Diarization, SpeakerSegment, label_turns, speaker_at

RATE = 16000
VOICE_A = ["-v", "en-us+m3", "-p", "25"]  # resemblyzer puts these two 0.41-0.6 apart, each voice within 0.27
VOICE_B = ["-v", "en+f4", "-p", "85"]
LINES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "I think we should meet again tomorrow morning to discuss the plan.",
    "Weather reports say it will rain heavily across the northern hills.",
    "Please remember to bring the documents and a pen to the office.",
    "Our train leaves at seven, so pack your bags tonight.",
    "That sounds fine to me, I will call you when I arrive.",
]
PAUSE_S = 0.6
SHARPEN = 20.0  # pyannote test: scale of the random segmentation classifier


def speak(voice: list[str], text: str, folder: Path) -> np.ndarray:
    path = folder / "line.wav"
    subprocess.run(["espeak-ng", *voice, "-w", str(path), text], check=True, capture_output=True)
    audio, rate = soundfile.read(path, dtype="float32")
    return resample(audio, rate, RATE)


def conversation(voices: list[list[str]], folder: Path) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """Each line spoken by the next voice in turn, PAUSE_S apart; the truth: (start_s, end_s, voice index) of the
    audible part of each line."""
    pieces, truth, at = [], [], 0
    pause = np.zeros(round(PAUSE_S * RATE), np.float32)
    for i, line in enumerate(LINES):
        audio = speak(voices[i % len(voices)], line, folder)
        audible = np.flatnonzero(np.abs(audio) > 1e-3)
        truth.append(((at + audible[0]) / RATE, (at + audible[-1] + 1) / RATE, i % len(voices)))
        pieces += [audio, pause]
        at += audio.size + pause.size
    return np.concatenate(pieces), truth


def accuracy(segments: list[SpeakerSegment], truth: list[tuple[float, float, int]], seconds: float) -> float:
    """Share of the true speech time (10 ms frames) labelled with the right speaker, hypothesis labels mapped to
    true voices by the best permutation; unlabelled speech counts as wrong."""
    frames = int(seconds * 100) + 1
    names = sorted({s.speaker for s in segments})
    hypothesis = np.full(frames, -1)
    for s in segments:
        hypothesis[round(s.start_s * 100) : round(s.end_s * 100)] = names.index(s.speaker)
    true = np.full(frames, -1)
    for start, end, voice in truth:
        true[round(start * 100) : round(end * 100)] = voice
    speech = true >= 0
    voices = max(len(names), max(v for _, _, v in truth) + 1)
    best = 0.0
    for mapping in itertools.permutations(range(voices), len(names)):
        mapped = np.array([mapping[h] if h >= 0 else -1 for h in hypothesis])
        best = max(best, float((mapped[speech] == true[speech]).mean()))
    return best


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory: pytest.TempPathFactory):
    return conversation([VOICE_A, VOICE_B], tmp_path_factory.mktemp("dialogue"))


@pytest.fixture(scope="module")
def monologue(tmp_path_factory: pytest.TempPathFactory):
    audio, truth = conversation([VOICE_A], tmp_path_factory.mktemp("monologue"))
    return audio[: round(truth[3][1] * RATE) + RATE // 4], truth[:4]  # four lines of one voice


@pytest.fixture(scope="module")
def diarizer():
    return Diarization.func_or_class({})


def diarize(deployment, audio, num_speakers: int = 0) -> list[SpeakerSegment]:
    return asyncio.run(deployment.diarize(audio, num_speakers))


def check_well_formed(segments: list[SpeakerSegment], truth: list[tuple[float, float, int]]) -> None:
    """Time order, no overlap, adjacent turns of one speaker merged, speakers named by first appearance, and the
    pauses between lines left out."""
    for a, b in itertools.pairwise(segments):
        assert a.start_s < a.end_s <= b.start_s
        assert not (a.speaker == b.speaker and a.end_s == b.start_s)
    first_seen = list(dict.fromkeys(s.speaker for s in segments))
    assert first_seen == [f"SPEAKER_{i:02d}" for i in range(len(first_seen))]
    for (_, end, _), (start, _, _) in itertools.pairwise(truth):
        middle = (end + start) / 2
        assert not any(s.start_s < middle < s.end_s for s in segments), f"the pause at {middle:.2f} s is speech"


def test_two_voices_found_and_labelled(diarizer, dialogue) -> None:
    audio, truth = dialogue
    segments = diarize(diarizer, audio)
    assert len({s.speaker for s in segments}) == 2
    assert accuracy(segments, truth, audio.size / RATE) >= 0.85
    check_well_formed(segments, truth)
    assert segments[0].speaker == "SPEAKER_00" and segments[0].start_s < truth[0][0] + 0.2


def test_two_speakers_forced(diarizer, dialogue) -> None:
    audio, truth = dialogue
    forced = diarize(diarizer, audio, 2)
    assert len({s.speaker for s in forced}) == 2
    assert accuracy(forced, truth, audio.size / RATE) >= 0.85
    assert forced == diarize(diarizer, audio)  # the estimate found the same two voices
    check_well_formed(forced, truth)


def test_one_voice_one_speaker(diarizer, monologue) -> None:
    audio, truth = monologue
    segments = diarize(diarizer, audio)
    assert {s.speaker for s in segments} == {"SPEAKER_00"}
    assert accuracy(segments, truth, audio.size / RATE) >= 0.85
    check_well_formed(segments, truth)
    assert {s.speaker for s in diarize(diarizer, audio, 1)} == {"SPEAKER_00"}


def test_silence_has_no_speakers(diarizer) -> None:
    noise = np.random.default_rng(0).normal(0, 1e-4, 2 * RATE).astype(np.float32)
    assert diarize(diarizer, noise) == []
    assert diarize(diarizer, noise, 2) == []


def test_bad_input_then_still_works(dialogue) -> None:
    deployment = Diarization.func_or_class({"max_speakers": 4, "audio": {"max_seconds": 30.0}})
    audio, truth = dialogue
    with pytest.raises(InvalidArgument, match="empty"):
        diarize(deployment, np.zeros(0, np.float32))
    with pytest.raises(InvalidArgument, match="NaN"):
        diarize(deployment, np.full(RATE, np.nan, np.float32))
    with pytest.raises(InvalidArgument, match="floats"):
        diarize(deployment, (audio * 32767).astype(np.int16))
    with pytest.raises(InvalidArgument, match="mono"):
        diarize(deployment, np.stack([audio, audio]))
    with pytest.raises(ResourceExhausted, match="limit is 30 s"):
        diarize(deployment, np.zeros(31 * RATE, np.float32))
    with pytest.raises(InvalidArgument, match="over the limit of 4"):
        diarize(deployment, audio, 5)
    bad_counts: tuple[Any, ...] = (-1, 2.5, True, "2", None)  # wrong on purpose
    for bad in bad_counts:
        with pytest.raises(InvalidArgument, match="num_speakers"):
            diarize(deployment, audio, bad)
    segments = diarize(deployment, audio)
    assert len({s.speaker for s in segments}) == 2 and accuracy(segments, truth, audio.size / RATE) >= 0.85
    info = deployment.info()
    assert info["backend"] == "resemblyzer" and info["max_speakers"] == 4 and info["sample_rate_hz"] == RATE


def test_label_turns_merges_and_renames() -> None:
    turns = [(3.0, 4.0, "x"), (0.5, 1.0, "b"), (1.0, 2.0, "b"), (2.5, 3.0, "b"), (4.0, 4.0, "y"), (5.0, 6.5, "x")]
    assert label_turns(turns, 6.0) == [
        SpeakerSegment(0.5, 2.0, "SPEAKER_00"),  # touching turns of one speaker merged
        SpeakerSegment(2.5, 3.0, "SPEAKER_00"),  # after a pause: kept apart, the silence is left out
        SpeakerSegment(3.0, 4.0, "SPEAKER_01"),
        SpeakerSegment(5.0, 6.0, "SPEAKER_01"),  # cut at the end of the clip; the empty turn of "y" dropped
    ]


def test_speaker_at() -> None:
    segments = [SpeakerSegment(0.0, 2.0, "SPEAKER_00"), SpeakerSegment(2.0, 3.0, "SPEAKER_01")]
    assert speaker_at(segments, 0.5, 1.0) == "SPEAKER_00"
    assert speaker_at(segments, 1.5, 2.8) == "SPEAKER_01"  # 0.8 s of SPEAKER_01 against 0.5 s
    assert speaker_at(segments, 1.0, 2.6) == "SPEAKER_00"
    assert speaker_at(segments, 3.2, 3.4) == "SPEAKER_01"  # just after the last turn: the nearest speaker
    assert speaker_at(segments, 5.0, 6.0) == ""  # far from any speech
    assert speaker_at([], 0.0, 1.0) == ""
    with pytest.raises(InvalidArgument, match="start_s <= end_s"):
        speaker_at(segments, 2.0, 1.0)


# ----- pyannote: a tiny random pipeline in speaker-diarization-community-1's layout, loaded from a folder


def save_tiny_pyannote_pipeline(folder: Path, seed: int = 0) -> str:
    """config.yaml + segmentation/ (a small random powerset PyanNet) + embedding/ (a random WeSpeaker ResNet34)
    + plda/ (a random PLDA), each saved in pyannote's own checkpoint format; returns the folder."""
    import lightning
    import torch
    import yaml
    from pyannote.audio import __version__
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.models.segmentation import PyanNet

    def save(model, subfolder: str) -> None:
        # what a lightning Trainer writes: weights, hyper-parameters, and pyannote's own block (on_save_checkpoint)
        checkpoint = {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
        }
        model.on_save_checkpoint(checkpoint)
        (folder / subfolder).mkdir(parents=True)
        torch.save(checkpoint, folder / subfolder / "pytorch_model.bin")

    torch.manual_seed(seed)
    segmentation = PyanNet(lstm={"hidden_size": 16, "num_layers": 1}, linear={"hidden_size": 16, "num_layers": 1})
    segmentation.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=5.0,
        min_duration=5.0,
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    segmentation.setup()  # adds the powerset classifier for those specifications
    with torch.no_grad():  # a sharper random classifier, so the frame classes follow the audio
        segmentation.classifier.weight.mul_(SHARPEN)
    save(segmentation, "segmentation")
    embedding = WeSpeakerResNet34(num_mel_bins=24, frame_length=50, frame_shift=40)  # coarse features: fast on CPU
    embedding.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0)
    embedding.setup()
    save(embedding, "embedding")
    rng = np.random.default_rng(seed)
    dimension, lda = 256, 16
    (folder / "plda").mkdir()
    np.savez(
        folder / "plda" / "xvec_transform.npz",
        mean1=0.01 * rng.normal(size=dimension),
        mean2=0.01 * rng.normal(size=lda),
        lda=np.linalg.qr(rng.normal(size=(dimension, lda)))[0],
    )
    np.savez(folder / "plda" / "plda.npz", mu=np.zeros(lda), tr=np.eye(lda), psi=np.linspace(2.0, 0.5, lda))
    pipeline = {
        "dependencies": {"pyannote.audio": __version__},
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                "segmentation": "$model/segmentation",
                "embedding": "$model/embedding",
                "plda": "$model/plda",
                "clustering": "VBxClustering",
                "segmentation_step": 0.5,  # chunks every 2.5 s (community-1: 0.1): fewer embeddings, a faster test
                "embedding_batch_size": 8,
                "segmentation_batch_size": 8,
            },
        },
        "params": {"segmentation": {"min_duration_off": 0.0}, "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(pipeline))
    return str(folder)


@pytest.fixture(scope="module")
def pyannote_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_pyannote_pipeline(tmp_path_factory.mktemp("pyannote") / "tiny-community-1")


def pipeline_segments(pipeline, audio: np.ndarray, **bounds) -> list[SpeakerSegment]:
    """The pipeline's own exclusive diarization of the waveform, cropped to the clip, each speaker's turns merged
    by pyannote (`Annotation.support`) and renamed in order of first appearance."""
    import torch
    from pyannote.core import Segment

    output = pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": RATE}, **bounds)
    annotation = output.exclusive_speaker_diarization.crop(Segment(0.0, audio.size / RATE)).support()
    names: dict[str, str] = {}
    segments = []
    for turn, _, label in sorted(annotation.itertracks(yield_label=True), key=lambda t: (t[0].start, t[0].end)):
        name = names.setdefault(label, f"SPEAKER_{len(names):02d}")
        segments.append(SpeakerSegment(round(turn.start, 3), round(turn.end, 3), name))
    return segments


def test_pyannote_equals_pipeline_called_directly(pyannote_folder: str, dialogue, monkeypatch) -> None:
    from pyannote.audio import Pipeline

    deployment = Diarization.func_or_class({"backend": "pyannote", "model": pyannote_folder, "max_speakers": 3})
    direct = Pipeline.from_pretrained(pyannote_folder)
    audio = dialogue[0][: 6 * RATE]  # the first line and the start of the second
    expected = pipeline_segments(direct, audio, max_speakers=3)
    assert len(expected) > 3 and expected[-1].end_s <= 6.0  # the random models follow the audio
    asked: list[dict] = []
    pipeline = deployment._engine._pipeline

    def spy(file, **bounds):  # what the engine asks the pipeline for
        asked.append(bounds)
        return pipeline(file, **bounds)

    monkeypatch.setattr(deployment._engine, "_pipeline", spy)
    assert diarize(deployment, audio) == expected
    assert diarize(deployment, audio, 2) == pipeline_segments(direct, audio, num_speakers=2)
    assert asked == [{"max_speakers": 3}, {"num_speakers": 2}]
    with pytest.raises(InvalidArgument, match="over the limit of 3"):
        diarize(deployment, audio, 4)
    assert deployment.info()["engine"].startswith("pyannote SpeakerDiarization")


def test_pyannote_config_errors(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs `model`"):
        DiarizationConfig(backend="pyannote")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Diarization.func_or_class({"backend": "pyannote", "model": str(tmp_path / "missing")})
