"""The Ray Data speech-to-text job: a folder of audio through an actor pool of the packaged Whisper tiny.en, to
Parquet rows equal to the engine called directly; a corrupt file gets an error row and the job goes on."""

from __future__ import annotations

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from almquist.audio import read_audio_file, resample, to_mono
from almquist.config.speech import STTConfig
from deployments.stt import FasterWhisperEngine
from ingestion.transcribe import main, transcribe_folder
from tests.tiny_whisper import speak

SENTENCES = ["Please turn off the lights when you leave the room.", "We are going to the beach this weekend."]


def test_transcribe_a_folder_to_parquet(local_ray, tmp_path) -> None:
    folder = tmp_path / "audio"
    (folder / "day2").mkdir(parents=True)
    names = [str(folder / "first.wav"), str(folder / "day2" / "second.wav")]
    for name, sentence in zip(names, SENTENCES, strict=True):
        speak(sentence, name)
    broken = folder / "broken.ogg"
    broken.write_bytes(b"OggS\x00not really an ogg stream" * 4)
    (folder / "notes.txt").write_text("not audio, and not picked up")
    config = STTConfig()

    rows, failed = transcribe_folder(folder, tmp_path / "out", config, actors=1, num_cpus=0.5)

    assert (rows, failed) == (3, 1)
    table = pd.read_parquet(tmp_path / "out").set_index("path")
    assert sorted(table.index) == sorted([*names, str(broken)])
    bad = table.loc[str(broken)]
    assert "not a readable audio file" in bad["error"]
    assert (bad["text"], bad["language"], bad["duration_s"], len(bad["words"])) == ("", "", 0.0, 0)

    # Every good row equals the engine called directly on the same file, decoded the same way. Ray starts the
    # 0.5-CPU actor with OMP_NUM_THREADS=1, so numpy's OpenBLAS sums the mel features on one thread there; int8
    # decoding turns the other summation order into word probabilities ~0.01 apart: sum on one thread here too.
    engine = FasterWhisperEngine(config)
    for name, sentence in zip(names, SENTENCES, strict=True):
        with open(name, "rb") as file:
            audio, rate = read_audio_file(file.read(), config.audio)
        with threadpool_limits(1, user_api="blas"):
            expected = engine.transcribe(resample(to_mono(audio), rate, 16000), "", True, False)
        row = table.loc[name]
        assert row["error"] == ""
        assert (row["text"], row["language"], row["duration_s"]) == (expected.text, "en", expected.duration_s)
        assert [dict(word) for word in row["words"]] == [vars(word) for word in expected.words]
        assert sentence.split()[-1].lower() in row["text"].lower()  # "room.", "weekend.": the speech was heard


def test_command_line_refuses_a_folder_without_audio(tmp_path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("no audio here")
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no audio files" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["folder"]])
def test_command_line_needs_a_folder_and_an_output(argv, capsys) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert "required" in capsys.readouterr().err
