"""A tiny HTDemucs (random weights, seeded) saved as a local demucs model repo, the layout `demucs --repo` reads.

demucs ships no weights in any registry; this builds the same class as the released `htdemucs` (4 sources, stereo,
44.1 kHz, depth 4, cross-domain transformer) with few channels, one transformer layer and a 1 s training segment,
so a second of audio separates in a fraction of a second on CPU. The package is what `demucs.states.serialize_model`
makes (class, init args, half-precision state, training args), written by `save_with_checksum` as
`<sig>-<sha256[:8]>.th` (the checksum `LocalRepo` verifies), plus `htdemucs.yaml`, a bag of that one model, as the
released `htdemucs` is (`remote/htdemucs.yaml`: `models: ['955717e8']`).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

SOURCES = ["drums", "bass", "other", "vocals"]
SIGNATURE = "0000beef"  # the name the .th file's model has in the repo (as '955717e8' for htdemucs)
TINY_KWARGS = {
    "sources": SOURCES,
    "audio_channels": 2,
    "samplerate": 44100,
    "segment": Fraction(1),
    "channels": 8,
    "depth": 4,
    "nfft": 1024,
    "t_layers": 1,
    "t_heads": 2,
    "dconv_comp": 4,
}


def tiny_htdemucs(seed: int = 0):
    """The tiny HTDemucs itself, in eval mode."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    return HTDemucs(**TINY_KWARGS).eval()


def save_tiny_htdemucs(folder: str | Path, seed: int = 0, signature: str = SIGNATURE) -> str:
    """Save the tiny model as a demucs repo in `folder`: the model `signature` and `htdemucs`, a bag of that one.

    `serialize_model` imports omegaconf only to turn the training config into a dict (`training_args`); omegaconf
    is not installed here, so the same dict is built directly, with `get_state(model, None, half=True)` as
    `serialize_model`'s default does."""
    from demucs.states import get_state, save_with_checksum

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_htdemucs(seed)
    args, kwargs = model._init_args_kwargs  # recorded by demucs's @capture_init
    package = {
        "klass": model.__class__,
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=True),
        "training_args": {"model": "htdemucs", "seed": seed},
    }
    save_with_checksum(package, folder / f"{signature}.th")
    (folder / "htdemucs.yaml").write_text(f"models: ['{signature}']\n")
    return str(folder)
