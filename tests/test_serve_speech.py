"""Speech and audio end to end through the Serve gRPC proxy: spoken turns in Converse, barge-in, Media RPCs, CLI.

An `audio` application (the conversation graph with every speech and audio family) is deployed beside the
session's `local` one. Real packaged models: Whisper tiny.en (faster-whisper), silero VAD, resemblyzer speaker
embeddings, espeak-ng, librosa and basic-pitch. Tiny models built from configs and loaded by path: the voice
emotion classifier, HTDemucs and MusicGen. The test speech is made by espeak-ng here, at 22.05 kHz, so every
spoken turn is also resampled by the server.
"""

from __future__ import annotations

import io
import itertools
import re
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from rapidfuzz.distance import Levenshtein

from almquist.client import Client, audio_chunks
from almquist.config import AppConfig
from almquist.v1 import common_pb2, conversation_pb2, media_pb2
from tests.tiny_demucs import save_tiny_htdemucs
from tests.tiny_musicgen import save_tiny_musicgen
from tests.tiny_voice_emotion import save_tiny_voice_emotion

pytestmark = pytest.mark.serve

APP = "audio"
RATE = 22050  # espeak-ng's rate: the server resamples to the models' 16 kHz


def espeak(text: str, voice: str = "en-us", pitch: int = 50) -> np.ndarray:
    """Speech for `text` from the espeak-ng command, as float32 mono at RATE."""
    command = ["espeak-ng", "-v", voice, "-p", str(pitch), "--stdout", text]
    wav = subprocess.run(command, check=True, capture_output=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    assert rate == RATE
    return samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    truth = words(reference)
    return Levenshtein.distance(truth, words(hypothesis)) / len(truth)


@pytest.fixture(scope="module")
def audio_target(serve_stack, tmp_path_factory: pytest.TempPathFactory):
    from ray import serve

    from almquist import runtime
    from graphs.app import compose

    work = tmp_path_factory.mktemp("audio")
    [local] = [app for app in serve_stack.schema.applications if app.name == "conversation"]
    config = AppConfig.model_validate(
        {
            # the local profile's SmolLM2: a real model answers spoken turns, long enough to be barged in on
            "llm": {**dict(local.args["llm"]), "default_max_tokens": 64},
            "knowledge": {"graph": {"path": str(work / "graph")}, "vectors": {"path": str(work / "qdrant")}},
            "kgqa": {"model_dir": str(work / "kgqa")},
            "speech": {
                "stt": {"partial_interval_s": 0.8},
                "vad": {"end_of_turn_silence_ms": 600},
                "diarization": {},
                "voice_emotion": {"model": save_tiny_voice_emotion(work / "emotion")},
                "tts": {},
            },
            "audio": {
                "separation": {"model": save_tiny_htdemucs(work / "demucs"), "segment_s": 2.0},
                "music_analysis": {},
                "music_gen": {
                    "model": save_tiny_musicgen(work / "musicgen"),
                    "max_duration_s": 2.0,
                    "default_duration_s": 1.0,
                },
            },
        }
    )
    names = ["ConversationIngress", "Router", "GraphRAG", "LLMServer", "Embeddings"]
    names += ["STT", "VAD", "Diarization", "VoiceEmotion", "TTS", "Separation", "MusicAnalysis", "MusicGen"]
    app = compose(config, ray_actor_options={name: {"num_cpus": 0.05} for name in names})
    serve.run(app, name=APP, route_prefix=f"/{APP}", blocking=False)
    runtime.wait_running([APP])
    yield serve_stack.target
    serve.delete(APP)


@pytest.fixture(scope="module")
def client(audio_target):
    with Client(audio_target, application=APP, timeout_s=300) as c:
        c.wait_ready()
        yield c


def of_kind(events, kind: str) -> list:
    return [getattr(e, kind) for e in events if e.WhichOneof("event") == kind]


def speak(conversation, audio: np.ndarray, pace: float = 1.0) -> None:
    """Sends audio as 100 ms chunks, `pace` times faster than real time (a microphone sends at 1x)."""
    for chunk in audio_chunks(audio, RATE, 0.1):
        conversation.send_audio(chunk)
        time.sleep(0.1 / pace)


SENTENCES = [
    "Who directed the movie Titanic?",
    "We are going to the beach this weekend with our friends.",
]


def test_spoken_turns_are_transcribed_with_partials_and_answered_like_typed_ones(client, serve_stack):
    conversation = client.converse(conversation_pb2.SessionStart())
    events: list[conversation_pb2.ServerEvent] = []
    for sentence in SENTENCES:
        speak(conversation, np.concatenate([silence(0.3), espeak(sentence), silence(1.2)]))
        while True:  # the turn ends by VAD (silence), with no EndOfTurn from the client
            event = conversation.next_event()
            events.append(event)
            if event.WhichOneof("event") == "turn_end":
                break
    conversation.close_send()
    events += list(conversation.events())

    transcripts = of_kind(events, "transcript")
    finals = [t for t in transcripts if t.is_final]
    assert len(finals) == 2
    for sentence, final in zip(SENTENCES, finals, strict=True):
        assert wer(sentence, final.text) <= 0.2, (sentence, final.text)
        assert final.language == "en"
        assert [w.start_s for w in final.words] == sorted(w.start_s for w in final.words)
        assert final.speaker == "SPEAKER_00" and {w.speaker for w in final.words} == {"SPEAKER_00"}
        assert final.emotion in {"neutral", "happy", "sad", "angry"}
    kinds = [(e.WhichOneof("event"), e.transcript.is_final if e.HasField("transcript") else None) for e in events]
    first_final = kinds.index(("transcript", True))
    assert ("transcript", False) in kinds[:first_final], "no partial transcript before the final one"
    started = of_kind(events, "turn_started")
    assert [s.modality for s in started] == ["audio", "audio"]
    assert [s.user_text for s in started] == [f.text for f in finals]
    assert started[0].route == "graph_rag"  # a movie question, routed like the typed one
    ends = of_kind(events, "turn_end")
    assert [e.reason for e in ends] == [common_pb2.TURN_END_REASON_COMPLETED] * 2, [e.detail for e in ends]
    # the turns' vad and stt stages reach Ray's Prometheus endpoint (almquist_turn_stage_seconds)
    from tests.prometheus import settled, total

    stage = "ray_almquist_turn_stage_seconds_count"
    series = settled(serve_stack.metrics_port, lambda s: total(s, stage, stage="stt") >= 2)
    assert total(series, stage, stage="vad") >= 2


def test_speech_while_an_answer_streams_interrupts_it(client):
    conversation = client.converse(conversation_pb2.SessionStart(max_tokens=400))
    conversation.send_text("Tell me a long story about a knight and a dragon.")
    events = []
    while True:
        event = conversation.next_event()
        events.append(event)
        if event.WhichOneof("event") == "token":
            break  # the answer is streaming: now the user talks over it
    speech = threading.Thread(
        target=speak, args=(conversation, np.concatenate([espeak("Stop, stop please."), silence(1.0)]))
    )
    speech.start()
    while True:
        event = conversation.next_event()
        events.append(event)
        if event.WhichOneof("event") == "turn_end":
            break
    speech.join()
    # The words that barged in are a turn of their own; once it starts, cut its answer (its length is not what this
    # test is about, and up to 400 tokens of it would cost a minute).
    while len(of_kind(events, "turn_started")) < 2:
        events.append(conversation.next_event())
    conversation.interrupt("the test has what it needs")
    conversation.close_send()
    events += list(conversation.events())
    first_end = of_kind(events, "turn_end")[0]
    assert first_end.reason == common_pb2.TURN_END_REASON_INTERRUPTED
    assert first_end.detail.startswith("barge-in: the user started speaking"), first_end.detail
    assert first_end.tokens < 400
    assert "stop" in words(next(t.text for t in of_kind(events, "transcript") if t.is_final))


def test_bad_audio_is_refused_in_band_and_the_stream_goes_on(client):
    conversation = client.converse(conversation_pb2.SessionStart())
    conversation.send_audio(common_pb2.AudioChunk(pcm16=b"\x00\x01\x02", sample_rate_hz=RATE))  # odd bytes
    conversation.send_audio(common_pb2.AudioChunk(pcm16=b"\x00\x00" * 100))  # no sample rate
    conversation.send(conversation_pb2.ClientEvent(end_of_turn=conversation_pb2.EndOfTurn()))  # nothing heard yet
    speak(conversation, np.concatenate([espeak("Please turn off the lights."), silence(0.2)]))
    conversation.end_turn()  # push-to-talk: the client ends the turn
    conversation.close_send()
    events = list(conversation.events())
    errors = of_kind(events, "error")
    assert [e.code for e in errors] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2
    assert "PCM16 frames" in errors[0].message and "sample_rate_hz is missing" in errors[1].message
    [final] = [t for t in of_kind(events, "transcript") if t.is_final]
    assert wer("Please turn off the lights.", final.text) <= 0.2
    [end] = of_kind(events, "turn_end")
    assert end.reason == common_pb2.TURN_END_REASON_COMPLETED


def test_transcribe_rpc_streams_partials_then_words_with_speakers(client):
    # two clearly different voices (tests/test_diarization.py's pair): a low male and a high female one
    sentence = "Please turn off the lights when you leave the room."
    audio = np.concatenate(
        [espeak(sentence, "en-us+m3", 25), silence(0.6), espeak("I agree with that completely.", "en+f4", 85)]
    )

    def paced():
        for chunk in audio_chunks(audio, RATE, 0.25):
            time.sleep(0.2)  # near real time: partials come while audio arrives
            yield chunk

    transcripts = list(client.transcribe(paced(), word_timestamps=True, diarize=True))
    *partials, final = transcripts
    assert partials and not any(p.is_final for p in partials) and final.is_final
    assert wer(sentence + " I agree with that completely.", final.text) <= 0.2, final.text
    speakers = [w.speaker for w in final.words]
    assert len(set(speakers)) == 2 and speakers[0] != speakers[-1], [(w.text, w.speaker) for w in final.words]


def test_synthesize_rpc_streams_pcm_with_phonemes_that_whisper_understands(client):
    text = "Good evening. Tonight we talk about jazz."
    chunks = list(client.synthesize(text))
    assert [c.audio.sequence for c in chunks] == list(range(len(chunks)))
    rate = chunks[0].audio.sample_rate_hz
    pcm = b"".join(c.audio.pcm16 for c in chunks)
    starts = [c.audio.start_s for c in chunks]
    assert starts[0] == 0.0 and all(b > a for a, b in itertools.pairwise(starts))
    phonemes = [p for c in chunks for p in c.phonemes]
    assert len(phonemes) > 20 and all(b.start_s >= a.start_s for a, b in itertools.pairwise(phonemes))
    assert phonemes[-1].start_s < len(pcm) / 2 / rate
    audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    transcripts = list(client.transcribe(audio_chunks(audio, rate, 0.5)))
    assert wer(text, transcripts[-1].text) <= 0.2, transcripts[-1].text
    with pytest.raises(grpc.RpcError) as failed:
        list(client.synthesize("   "))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_speech_media_rpcs_answer_and_refuse_bad_audio(client):
    speech = np.concatenate([silence(0.5), espeak("Hello there, my friend."), silence(0.5)])
    [chunk] = audio_chunks(speech, RATE, chunk_s=10.0)
    spans = client.media.DetectSpeech(media_pb2.DetectSpeechRequest(audio=chunk), metadata=client.metadata).speech
    assert len(spans) >= 1 and 0.3 < spans[0].start_s < 0.8 and spans[-1].end_s < speech.size / RATE
    diarized = client.media.Diarize(media_pb2.DiarizeRequest(audio=chunk), metadata=client.metadata)
    assert diarized.speakers == 1
    emotion = client.media.RecognizeVoiceEmotion(media_pb2.VoiceEmotionRequest(audio=chunk), metadata=client.metadata)
    assert emotion.emotion in emotion.scores and abs(sum(emotion.scores.values()) - 1) < 1e-4
    for bad, code in (
        (common_pb2.AudioChunk(), grpc.StatusCode.INVALID_ARGUMENT),
        (common_pb2.AudioChunk(pcm16=b"\x00\x00" * 10, sample_rate_hz=100), grpc.StatusCode.INVALID_ARGUMENT),
        (common_pb2.AudioChunk(pcm16=bytes(2 * 16000 * 700), sample_rate_hz=16000), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ):
        with pytest.raises(grpc.RpcError) as failed:
            client.media.Diarize(media_pb2.DiarizeRequest(audio=bad), metadata=client.metadata)
        assert failed.value.code() == code, failed.value.details()
    with pytest.raises(grpc.RpcError) as failed:
        list(client.transcribe(iter([common_pb2.AudioChunk(pcm16=b"\x01", sample_rate_hz=16000)])))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.media.Diarize(media_pb2.DiarizeRequest(audio=chunk), metadata=client.metadata).speakers == 1


def click_track(bpm: float, seconds: float, rate: int = 22050) -> np.ndarray:
    audio = np.zeros(int(seconds * rate), np.float32)
    click = (np.sin(2 * np.pi * 1000 * np.arange(int(0.02 * rate)) / rate) * np.hanning(int(0.02 * rate))).astype(
        np.float32
    )
    for beat in np.arange(0, seconds - 0.05, 60.0 / bpm):
        start = int(beat * rate)
        audio[start : start + click.size] += click
    return audio


def test_music_analysis_separation_and_generation_rpcs(client, tmp_path: Path):
    [chunk] = audio_chunks(click_track(120, 8.0), 22050, chunk_s=10.0)
    analysis = client.analyze_music(chunk, notes=False)
    assert abs(analysis.tempo_bpm - 120) / 120 <= 0.03
    mix = np.stack([click_track(100, 5.0), 0.3 * np.sin(2 * np.pi * 220 * np.arange(5 * 22050) / 22050)]).astype(
        np.float32
    )
    results = list(client.separate(media_pb2.SeparateRequest(file=_wav(mix, 22050))))
    stems = {r.kind for r in results}
    assert stems == {"stem:drums", "stem:bass", "stem:other", "stem:vocals"}
    chunks = {int(r.metadata["chunks"]) for r in results}
    assert chunks == {3}  # 5 s in 2 s segments, streamed back as they are done
    with pytest.raises(grpc.RpcError) as failed:
        list(client.separate(media_pb2.SeparateRequest(file=b"RIFF not a wav")))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as failed:
        list(client.separate(media_pb2.SeparateRequest()))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    request = media_pb2.GenerateMusicRequest(prompt="calm piano in the rain", duration_s=1.0, seed=7, lyrics=True)
    events = list(client.generate_music(request))
    *progress, last = events
    assert progress and [p.step for p in progress] == sorted(p.step for p in progress)
    music, rate = soundfile.read(io.BytesIO(last.result.data))
    assert last.result.metadata["seed"] == "7" and abs(music.shape[0] / rate - 1.0) < 0.1
    assert len(last.result.metadata["lyrics"].split()) >= 5
    request = media_pb2.GenerateMusicRequest(prompt="calm piano in the rain", duration_s=1.0, seed=7)
    again = list(client.generate_music(request))
    assert again[-1].result.data == last.result.data  # same seed, same song
    for duration, code in ((-1.0, grpc.StatusCode.INVALID_ARGUMENT), (60.0, grpc.StatusCode.RESOURCE_EXHAUSTED)):
        with pytest.raises(grpc.RpcError) as failed:
            list(client.generate_music(media_pb2.GenerateMusicRequest(prompt="jazz", duration_s=duration)))
        assert failed.value.code() == code


def _wav(audio: np.ndarray, rate: int) -> bytes:
    from almquist.audio import encode_wav

    return encode_wav(audio, rate)


def test_cli_transcribe_separate_music_and_analyze(client, audio_target, tmp_path, monkeypatch, capsys):
    from almquist import cli

    monkeypatch.setenv("ALMQUIST_APPLICATION", APP)
    speech = tmp_path / "speech.wav"
    soundfile.write(speech, np.concatenate([espeak("The concert starts at eight."), silence(0.3)]), RATE)
    assert cli.main(["transcribe", str(speech), "--words", "--target", audio_target]) == 0
    printed = capsys.readouterr().out
    assert wer("The concert starts at eight.", printed.splitlines()[0]) <= 0.2, printed
    assert "words" in printed
    song = tmp_path / "song.wav"
    soundfile.write(song, click_track(120, 4.0), 22050)
    assert cli.main(["separate", str(song), "--out", str(tmp_path / "stems"), "--target", audio_target]) == 0
    written = sorted(p.name for p in (tmp_path / "stems").iterdir())
    assert written == ["song.bass.wav", "song.drums.wav", "song.other.wav", "song.vocals.wav"]
    assert soundfile.info(tmp_path / "stems" / "song.drums.wav").duration == pytest.approx(4.0, abs=0.05)
    out = tmp_path / "tune.wav"
    assert cli.main(["music", "a short jingle", "--duration", "0.5", "--out", str(out), "--target", audio_target]) == 0
    assert soundfile.info(out).duration == pytest.approx(0.5, abs=0.1)
    assert cli.main(["analyze", str(song), "--target", audio_target]) == 0
    assert "BPM" in capsys.readouterr().out
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert cli.main(["separate", str(empty), "--target", audio_target]) == 2
