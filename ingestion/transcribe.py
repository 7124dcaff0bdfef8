"""Batch speech to text with Ray Data: a folder of audio files in, one Parquet row per file out (the transcript).

    python -m ingestion transcribe FOLDER --out transcripts.parquet [--model REF] [--language en] [--actors N]

Files (wav, flac, ogg, mp3) are read by Ray Data (`read_binary_files`), then an actor pool of `Transcribe` workers,
each holding one `FasterWhisperEngine` (the engine the STT deployment serves), decodes each file with
almquist.audio (soundfile, PyAV for MP3), mixes it to mono, resamples it to 16 kHz and transcribes it with word
timestamps. Rows: path, text, language, duration_s, words (a list of {text, start_s, end_s, probability}) and
error. A file that cannot be read or transcribed gets its error in that column and empty results: one bad file
never stops the job.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from almquist.audio import check_samples, read_audio_file, resample, to_mono
from almquist.config.speech import STTConfig
from almquist.errors import AlmquistError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
SAMPLE_RATE_HZ = 16000

WORD = pa.struct(
    [("text", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()), ("probability", pa.float64())]
)
# One schema for every batch: a batch of only bad files would otherwise give `words` a null list type, and Parquet
# files of one output folder with different schemas do not read back as one table.
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("duration_s", pa.float64()),
        ("words", pa.list_(WORD)),
        ("error", pa.string()),
    ]
)


class Transcribe:
    """A Ray Data actor: a batch of audio files in (`bytes`, `path`), one transcript row per file out."""

    def __init__(self, config: STTConfig, word_timestamps: bool = True, engine_cls: type | None = None) -> None:
        from deployments.stt import FasterWhisperEngine

        self._config = config
        self._word_timestamps = word_timestamps
        self._engine = (engine_cls or FasterWhisperEngine)(config)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = [self._row(bytes(data), str(path)) for data, path in zip(batch["bytes"], batch["path"], strict=True)]
        return pa.Table.from_pylist(rows, schema=SCHEMA)

    def _row(self, data: bytes, path: str) -> dict[str, Any]:
        row: dict[str, Any] = {"path": path, "text": "", "language": "", "duration_s": 0.0, "words": [], "error": ""}
        try:
            audio, rate = read_audio_file(data, self._config.audio)
            samples = check_samples(resample(to_mono(audio), rate, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ, self._config.audio)
            result = self._engine.transcribe(samples, "", self._word_timestamps, False)
        except AlmquistError as error:
            return row | {"error": error.message}
        except Exception as error:  # a decoder or engine failure on one file: report it, keep going
            return row | {"error": f"{type(error).__name__}: {error}"}
        return row | {
            "text": result.text,
            "language": result.language,
            "duration_s": result.duration_s,
            "words": [vars(word) for word in result.words],
        }


def audio_files(folder: str | Path) -> list[str]:
    """The audio files under `folder` (by suffix, recursively), sorted; FileNotFoundError when there are none."""
    files = sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    return files


def transcribe_folder(
    folder: str | Path,
    out_parquet: str | Path,
    config: STTConfig,
    actors: int = 1,
    num_cpus: float = 1.0,
    batch_size: int = 4,
    word_timestamps: bool = True,
    num_gpus: float = 0.0,
    engine_cls: type | None = None,
) -> tuple[int, int]:
    """Transcribes every audio file under `folder`; writes Parquet to `out_parquet` (a folder, Ray Data's layout)
    and returns (rows written: one per file, failures included; files that failed)."""
    from ray.data import ActorPoolStrategy

    files = audio_files(folder)
    dataset = ray.data.read_binary_files(files, include_paths=True).map_batches(
        Transcribe,
        fn_constructor_kwargs={"config": config, "word_timestamps": word_timestamps, "engine_cls": engine_cls},
        compute=ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    dataset.write_parquet(str(out_parquet))
    errors = ray.data.read_parquet(str(out_parquet), columns=["error"]).to_pandas()["error"]
    return len(errors), int((errors != "").sum())


def main(argv: list[str] | None = None) -> int:
    """`python -m ingestion transcribe ...` (argv without the word `transcribe`): 0 when some file was transcribed,
    1 when every file failed, 2 when the folder has no audio files. Joins RAY_ADDRESS's cluster, else starts one."""
    parser = argparse.ArgumentParser(prog="python -m ingestion transcribe", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the Parquet output folder")
    parser.add_argument("--model", default=STTConfig().model, help="a CTranslate2 Whisper folder or pkg:// ref")
    parser.add_argument("--language", default="en", help="language code; 'auto' detects it per file")
    parser.add_argument("--compute-type", default="int8", help="CTranslate2 compute type (float16 on a GPU)")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--actors", type=int, default=1, help="transcriber actors in the pool")
    parser.add_argument("--batch-size", type=int, default=4, help="files per actor call")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPU fraction per actor (0 on CPU)")
    args = parser.parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True)
    try:
        audio_files(args.folder)
    except FileNotFoundError as error:
        console.print(f"[red]{error}[/]")
        return 2
    config = STTConfig(
        model=args.model,
        language=None if args.language == "auto" else args.language,
        compute_type=args.compute_type,
        beam_size=args.beam_size,
        device="cuda" if args.num_gpus else "cpu",
    )
    started = not ray.is_initialized()  # a notebook or test may have started Ray already
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False, logging_level=logging.ERROR)
    try:
        files, failed = transcribe_folder(
            args.folder, args.out, config, args.actors, args.num_cpus, args.batch_size, num_gpus=args.num_gpus
        )
    finally:
        if started:
            ray.shutdown()
    console.print_json(json.dumps({"files": files, "failed": failed, "output": str(args.out)}))
    return 1 if failed == files else 0


if __name__ == "__main__":
    sys.exit(main())
