"""`almquist transcribe | separate | music | analyze`: the speech and audio families through the Media service.

In: an audio file (any format soundfile or PyAV reads) or a prompt. Out: progress on stderr, results on stdout
(a transcript with word timings and speakers, a music analysis table), and files where asked (stems as WAV, a
song as WAV plus its lyrics). Audio is decoded here and sent as PCM16 chunks at its own rate: the server
resamples. Errors print the gRPC status and its message and exit 2.
"""

from __future__ import annotations

import argparse
import io
import os
from collections import defaultdict
from pathlib import Path

import grpc
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from almquist.audio import read_audio_file
from almquist.cli_media import _rpc_error, console, out
from almquist.client import DEFAULT_TARGET, Client, audio_chunks
from almquist.config.audio import AudioLimits
from almquist.errors import AlmquistError
from almquist.v1 import media_pb2

_LIMITS = AudioLimits(max_seconds=24 * 3600.0, max_file_bytes=2_000_000_000)  # the server applies its own limits


def _read(path: Path) -> tuple[np.ndarray, int] | None:
    try:
        return read_audio_file(path.read_bytes(), _LIMITS)
    except AlmquistError as error:
        console.print(f"[red]{path}[/]: {error.message}")
        return None


def _progress(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)


def cmd_transcribe(args: argparse.Namespace) -> int:
    decoded = _read(args.file)
    if decoded is None:
        return 2
    audio, rate = decoded
    chunk_s = 1.0
    total = int(np.ceil(audio.shape[-1] / (chunk_s * rate)))
    final = None
    with Client(args.target) as client, _progress("transcribing") as progress:
        task = progress.add_task("send", total=total)

        def sent():
            for chunk in audio_chunks(audio, rate, chunk_s):
                progress.advance(task)
                yield chunk

        try:
            for transcript in client.transcribe(sent(), args.language, True, args.diarize):
                if transcript.is_final:
                    final = transcript
                elif args.partials:
                    console.print(f"[dim]… {transcript.text}[/]")
        except grpc.RpcError as error:
            return _rpc_error(error)
    if final is None:
        console.print("[red]the server ended the stream without a final transcript[/]")
        return 1
    out.print(final.text)
    if args.words:
        table = Table(title=f"{len(final.words)} words ({final.language})")
        for column in ("start", "end", "word", "p", "speaker"):
            table.add_column(column)
        for w in final.words:
            table.add_row(f"{w.start_s:.2f}", f"{w.end_s:.2f}", w.text, f"{w.probability:.2f}", w.speaker)
        out.print(table)
    return 0


def cmd_separate(args: argparse.Namespace) -> int:
    stems: dict[str, list[bytes]] = defaultdict(list)
    request = media_pb2.SeparateRequest(file=args.file.read_bytes())
    with Client(args.target) as client, _progress("separating") as progress:
        task = progress.add_task("separate", total=None)
        try:
            for result in client.separate(request):
                stems[result.kind.removeprefix("stem:")].append(result.data)
                chunks = int(result.metadata["chunks"])
                progress.update(task, completed=int(result.metadata["chunk"]) + 1, total=chunks)
        except grpc.RpcError as error:
            return _rpc_error(error)
    import soundfile

    args.out.mkdir(parents=True, exist_ok=True)
    for stem, pieces in stems.items():
        decoded = [soundfile.read(io.BytesIO(piece), dtype="float32", always_2d=True) for piece in pieces]
        rate = decoded[0][1]
        target = args.out / f"{args.file.stem}.{stem}.wav"
        soundfile.write(target, np.concatenate([samples for samples, _ in decoded]), rate, subtype="PCM_16")
        out.print(f"{stem}: {target}")
    return 0


def cmd_music(args: argparse.Namespace) -> int:
    request = media_pb2.GenerateMusicRequest(
        prompt=args.prompt, duration_s=args.duration, lyrics=args.lyrics, seed=args.seed
    )
    if args.melody:
        decoded = _read(args.melody)
        if decoded is None:
            return 2
        chunk = next(audio_chunks(decoded[0], decoded[1], chunk_s=decoded[0].shape[-1] / decoded[1]))
        request.melody.CopyFrom(chunk)
    result = None
    with Client(args.target) as client, _progress("composing") as progress:
        task = progress.add_task("music", total=None)
        try:
            for event in client.generate_music(request):
                if event.HasField("result"):
                    result = event.result
                else:
                    progress.update(task, completed=event.step, total=event.total_steps or None)
        except grpc.RpcError as error:
            return _rpc_error(error)
    if result is None:
        console.print("[red]the server ended the stream without music[/]")
        return 1
    args.out.write_bytes(result.data)
    lyrics = result.metadata.get("lyrics", "")
    facts = ", ".join(f"{k} {v}" for k, v in sorted(result.metadata.items()) if k != "lyrics")
    out.print(f"{args.out} ({facts})")
    if lyrics:
        args.out.with_suffix(".lyrics.txt").write_text(lyrics + "\n")
        out.print(lyrics)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    decoded = _read(args.file)
    if decoded is None:
        return 2
    audio, rate = decoded
    chunk = next(audio_chunks(audio, rate, chunk_s=audio.shape[-1] / rate))
    with Client(args.target) as client:
        try:
            result = client.analyze_music(chunk, notes=args.notes)
        except grpc.RpcError as error:
            return _rpc_error(error)
    table = Table(title=f"{args.file} ({result.duration_s:.1f} s)")
    table.add_column("what")
    table.add_column("value")
    table.add_row("tempo", f"{result.tempo_bpm:.1f} BPM ({len(result.beats_s)} beats)")
    table.add_row("key", result.key)
    table.add_row("chords", " ".join(c.chord for c in result.chords[:24]))
    if args.notes:
        table.add_row("notes", f"{len(result.notes)}: " + " ".join(str(n.pitch_midi) for n in result.notes[:24]))
    out.print(table)
    return 0


def _audio_file(text: str) -> Path:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no audio file at {text}")
    return Path(text)


def add_audio_commands(sub: argparse._SubParsersAction) -> None:
    """Adds transcribe, separate, music and analyze to the `almquist` parser."""
    target = os.environ.get("ALMQUIST_TARGET", DEFAULT_TARGET)

    transcribe = sub.add_parser("transcribe", help="speech to text: almquist transcribe FILE")
    transcribe.add_argument("file", type=_audio_file)
    transcribe.add_argument("--language", default="", help="language code; empty: the server's default")
    transcribe.add_argument("--diarize", action="store_true", help="label speakers")
    transcribe.add_argument("--words", action="store_true", help="print word timings")
    transcribe.add_argument("--partials", action="store_true", help="print partial transcripts as they come")
    transcribe.add_argument("--target", default=target)
    transcribe.set_defaults(func=cmd_transcribe)

    separate = sub.add_parser("separate", help="source separation: writes FILE.drums.wav, .bass, .other, .vocals")
    separate.add_argument("file", type=_audio_file)
    separate.add_argument("--out", type=Path, default=Path("."), help="folder for the stems")
    separate.add_argument("--target", default=target)
    separate.set_defaults(func=cmd_separate)

    music = sub.add_parser("music", help='music generation: almquist music "calm piano, rain" --duration 10')
    music.add_argument("prompt")
    music.add_argument("--duration", type=float, default=0.0, help="seconds (0: the server's default)")
    music.add_argument("--melody", type=_audio_file, default=None, help="a melody to follow (melody models)")
    music.add_argument("--lyrics", action="store_true", help="also write lyrics with the LLM")
    music.add_argument("--seed", type=int, default=0, help="0: random (the seed used is printed)")
    music.add_argument("--out", type=Path, default=Path("music.wav"))
    music.add_argument("--target", default=target)
    music.set_defaults(func=cmd_music)

    analyze = sub.add_parser("analyze", help="tempo, key, chords (and notes) of a music file")
    analyze.add_argument("file", type=_audio_file)
    analyze.add_argument("--notes", action="store_true", help="also transcribe notes")
    analyze.add_argument("--target", default=target)
    analyze.set_defaults(func=cmd_analyze)
