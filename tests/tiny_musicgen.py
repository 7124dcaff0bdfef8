"""Tiny MusicGen models for tests, built from transformers configs and saved with `save_pretrained`.

`save_tiny_musicgen(folder)` writes a text-to-music `MusicgenForConditionalGeneration` (a 2-layer T5 text encoder,
a small EnCodec at 8 kHz with 4 codebooks, a 2-layer decoder) and a `MusicgenProcessor` (EnCodec feature extractor,
a word-level tokenizer built in-process); `save_tiny_musicgen_melody(folder)` the same as a
`MusicgenMelodyForConditionalGeneration` with a `MusicgenMelodyProcessor` (chroma features). Random weights from a
fixed seed (EnCodec's codebooks filled, its decoder's conv biases zeroed, so that different codes sound different):
the audio is noise, but every load, generate and decode step is the library's own. Seconds to build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# the tokenizer's whole vocabulary: prompts in tests use these words (others map to <unk>)
_VOCABULARY = (
    "a an the of with and in on at to for slow fast calm happy sad loud soft piano guitar drums violin bass synth "
    "jazz rock pop folk ambient electronic orchestral song tune melody beat rhythm music track solo band night rain "
    "summer sunny dark bright warm lo-fi upbeat gentle epic"
)
_SAMPLING_RATE = 8000
_NUM_CODEBOOKS = 4


def _tokenizer():
    """A T5-style fast tokenizer (pad 0, eos 1, unk 2) over `_VOCABULARY`, built offline with the tokenizers library."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {word: i + 3 for i, word in enumerate(_VOCABULARY.split())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # T5 appends </s> to every sequence
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=64
    )


def _configs(vocab_size: int):
    from transformers import EncodecConfig, MusicgenDecoderConfig, T5Config

    text = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,  # type: ignore[call-arg]  # PreTrainedConfig keeps extra keywords as attributes
    )
    # hop 8*5*4 = 160 samples at 8 kHz: 50 frames per second (as MusicGen at 32 kHz); 4 codebooks of 64 codes
    audio = EncodecConfig(
        sampling_rate=_SAMPLING_RATE,
        hidden_size=16,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4],
        codebook_size=64,
        codebook_dim=16,
        num_lstm_layers=1,
        kernel_size=3,
        last_kernel_size=3,
        residual_kernel_size=3,
        target_bandwidths=[1.2],  # 1200 bit/s / (50 frames/s x 6 bits) = 4 quantizers
        use_causal_conv=True,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=64,
        max_position_embeddings=2048,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        hidden_size=32,
        num_codebooks=_NUM_CODEBOOKS,
        pad_token_id=64,
        bos_token_id=64,
        dropout=0.0,
        initializer_factor=0.2,  # the default 0.02 leaves a random decoder deaf to its text and melody
    )
    return text, audio, decoder


def _save(folder: str | Path, name: str, melody: bool, seed: int) -> str:
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyConfig,
        MusicgenMelodyFeatureExtractor,
        MusicgenMelodyForConditionalGeneration,
        MusicgenMelodyProcessor,
        MusicgenProcessor,
    )

    path = Path(folder) / name
    tokenizer = _tokenizer()
    text, audio, decoder = _configs(len(tokenizer))
    torch.manual_seed(seed)
    # the melody and the text-only families are parallel classes with no base that types both
    config: Any
    model: Any
    features: Any
    processor: Any
    if melody:
        config = MusicgenMelodyConfig(text_encoder=text, audio_encoder=audio, decoder=decoder, num_chroma=12)
        model = MusicgenMelodyForConditionalGeneration(config)
        # the 32 kHz extractor's 4096 / 16384 scaled to 8 kHz: the same 235 chroma frames per 30 s as the real model
        features = MusicgenMelodyFeatureExtractor(sampling_rate=_SAMPLING_RATE, hop_length=1024, n_fft=4096)
        processor = MusicgenMelodyProcessor(feature_extractor=features, tokenizer=tokenizer)
    else:
        config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
        model = MusicgenForConditionalGeneration(config)
        features = EncodecFeatureExtractor(feature_size=1, sampling_rate=_SAMPLING_RATE)
        processor = MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer)
    with torch.no_grad():
        # EnCodec's codebooks are buffers that start at zero (k-means fills them in training): every code would decode
        # to the same sound, so give them seeded random vectors
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
        # random conv biases make the codec's output a constant near -1 whatever the codes: zero them for centred noise
        for module in model.audio_encoder.decoder.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and module.bias is not None:
                module.bias.zero_()
    # what the published checkpoints ship: sampling with top-k, and the decoder's start/pad ids for generate
    model.generation_config.do_sample = True
    model.generation_config.top_k = 50
    model.generation_config.guidance_scale = 3.0
    model.generation_config.decoder_start_token_id = decoder.bos_token_id
    model.generation_config.pad_token_id = decoder.pad_token_id
    model.generation_config.max_length = 1500
    model.eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def save_tiny_musicgen(folder: str | Path, seed: int = 0) -> str:
    """A tiny text-to-music MusicGen folder (model + processor); returns its path."""
    return _save(folder, "tiny-musicgen", melody=False, seed=seed)


def save_tiny_musicgen_melody(folder: str | Path, seed: int = 0) -> str:
    """A tiny MusicGen-Melody folder (model + chroma processor); returns its path."""
    return _save(folder, "tiny-musicgen-melody", melody=True, seed=seed)
