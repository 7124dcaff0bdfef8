"""Tiny vision models built from a config and saved to disk, so tests load them through the real loading path.

Each builder writes a model folder under `path` and returns the folder to put in the deployment's config
(`model:`). Nothing here is downloaded: configs are small, weights random (seeded), processors built in code.
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_owlvit(path: Path) -> str:
    """An OWL-ViT detector (`OwlViTForObjectDetection` + `OwlViTProcessor`) small enough for a CPU test."""
    raise NotImplementedError


def save_tiny_dpt(path: Path) -> str:
    """A DPT depth model (`DPTForDepthEstimation` + `DPTImageProcessor`), the MiDaS v3 architecture."""
    raise NotImplementedError


def save_tiny_sam(path: Path) -> str:
    """A SAM model (`SamModel` + `SamProcessor`)."""
    raise NotImplementedError


def save_tiny_stable_diffusion(path: Path) -> str:
    """A Stable Diffusion pipeline folder (UNet, VAE, CLIP text encoder, tokenizer, scheduler)."""
    raise NotImplementedError
