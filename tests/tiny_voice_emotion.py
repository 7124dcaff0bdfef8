"""A tiny wav2vec2 speech-emotion classifier built from a config (no weights exist offline), saved with
`save_pretrained` so tests load it through the deployment's real `from_pretrained` path."""

from __future__ import annotations

from pathlib import Path

EMOTIONS = ("neutral", "happy", "sad", "angry")


def save_tiny_voice_emotion(folder: str | Path, labels: tuple[str, ...] = EMOTIONS, seed: int = 0) -> str:
    """A seeded random `Wav2Vec2ForSequenceClassification` (hidden 32, 2 transformer layers, a 2-layer conv stack
    of stride 5 x 2) labelled `labels`, and its `Wav2Vec2FeatureExtractor`, saved to `folder`; returns the path."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = Wav2Vec2ForSequenceClassification(config).eval()
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    path = Path(folder)
    model.save_pretrained(path)
    extractor.save_pretrained(path)
    return str(path)
