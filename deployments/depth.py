"""Monocular relative depth: DPT (the MiDaS v3 architecture) through transformers, or a MiDaS model file.

In (by handle): `estimate(image, mime_type, boxes=())`, the image as encoded bytes and optional boxes in its pixels
(e.g. a detector's). Out: a `DepthResult`, the relative inverse depth map (larger = nearer) as float16 downsampled so
its longest side is at most `map_max_side`, its own width and height, and the median depth inside each box, taken on
the full-resolution map. `describe_distance` turns those medians into "near" / "middle" / "far" for the scene graph.

Engines, by `backend:` in the config: `dpt` (default) loads `DPTForDepthEstimation` + `DPTImageProcessor` from a
folder (Intel/dpt-large is MiDaS 3.0; Intel/dpt-beit-*, dpt-swinv2-* are MiDaS 3.1 with transformers' own
backbones); `timm_midas` loads a whole MiDaS v3.1 network (timm backbone + DPT head) saved as one file.
"""

from __future__ import annotations

import asyncio
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from ray import serve

from almquist.config import DepthConfig, model_name, resolve_model_ref
from almquist.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from almquist.images import decode_image

Box = tuple[float, float, float, float]


class DepthEngine(Protocol):
    name: str

    def __init__(self, config: DepthConfig) -> None: ...

    def predict(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Relative inverse depth (float32, larger = nearer), one map per image at that image's size."""
        ...


@dataclass
class DepthResult:
    depth: np.ndarray  # float16, height x width, longest side <= config.map_max_side, the image's aspect
    width: int  # columns of `depth`
    height: int  # rows of `depth`
    box_median_depth: list[float]  # per requested box, on the full-resolution map


def _post_process(processor: Any, predicted_depth: Any, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The processor's own resize of predicted depth to each (height, width); bicubic by hand if it has none."""
    import torch
    from transformers.modeling_outputs import DepthEstimatorOutput

    post = getattr(processor, "post_process_depth_estimation", None)
    if post is not None:
        maps = [out["predicted_depth"] for out in post(DepthEstimatorOutput(predicted_depth=predicted_depth), sizes)]
    else:  # older processors: what post_process_depth_estimation does
        maps = [
            torch.nn.functional.interpolate(d[None, None], size=s, mode="bicubic", align_corners=False)[0, 0]
            for d, s in zip(predicted_depth, sizes, strict=True)
        ]
    return [m.detach().float().cpu().numpy() for m in maps]


class DPTEngine:
    """`DPTForDepthEstimation` + `DPTImageProcessor` from a folder, post-processed to each image's size."""

    def __init__(self, config: DepthConfig) -> None:
        import torch
        from transformers import DPTForDepthEstimation, DPTImageProcessor

        path = resolve_model_ref(config.model)
        self._torch = torch
        self._device = config.device
        # transformers wraps PreTrainedModel.to in functools.wraps, which hides its bound self from mypy
        model = DPTForDepthEstimation.from_pretrained(path, local_files_only=True)
        self._model = model.to(config.device).eval()  # type: ignore[arg-type]
        self._processor = DPTImageProcessor.from_pretrained(path, local_files_only=True)
        self.name = model_name(config.model)

    def predict(self, images: list[Image.Image]) -> list[np.ndarray]:
        maps = []
        for image in images:  # one at a time: a keep_aspect_ratio processor gives each image its own input size
            inputs = self._processor(images=image, return_tensors="pt").to(self._device)
            with self._torch.inference_mode():
                predicted = self._model(**inputs).predicted_depth
            maps.extend(_post_process(self._processor, predicted, [(image.height, image.width)]))
        return maps


# Candidate file names inside a `timm_midas` model folder, in order of preference.
_MIDAS_FILES = ("model.pt2", "model.pt", "model.ts", "model.pth")


def midas_default_processor() -> Any:
    """MiDaS v3.1's 384 transform as a `DPTImageProcessor`: keep the aspect ratio, sides a multiple of 32, scaled as
    little as possible, normalised to [-1, 1]; used when the model folder has no preprocessor_config.json."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(
        size={"height": 384, "width": 384},
        keep_aspect_ratio=True,
        ensure_multiple_of=32,
        resample=Image.Resampling.BICUBIC,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


class TimmMidasEngine:
    """A whole MiDaS v3.1 network (timm backbone + DPT head) from one file: the GPU-machine path for the original
    isl-org/MiDaS checkpoints.

    Why not through transformers: DPTConfig accepts a timm backbone config (TimmBackboneConfig), but in 5.23 the
    DPT neck then expects ViT tokens with a CLS token and `backbone_config.patch_size`, which a timm backbone's NCHW
    feature maps and config do not give, so it fails at the first forward. The MiDaS repository's own model class
    (`midas.dpt_depth.DPTDepthModel`) is not a pip package, so the network comes as one of:
      * `*.pt2`: `torch.export.save` of an ExportedProgram (torch's supported format): export it with dynamic
        height and width, or pair it with a fixed-size preprocessor_config.json, since the transform keeps aspect;
      * a TorchScript archive (`torch.jit.script`/`trace` then `.save`), loaded with `torch.jit.load`;
      * a pickled full module (`torch.save(model)` of `torch.hub.load("intel-isl/MiDaS", ...)`), loaded with
        `torch.load(weights_only=False)`: the MiDaS source and timm must be importable, and the file trusted.
    `model` is that file, or a folder holding one of `model.pt2`, `model.pt`, `model.ts`, `model.pth`. The input
    transform is the folder's `preprocessor_config.json` (a DPTImageProcessor) when there is one, else MiDaS v3.1's
    384 transform (`midas_default_processor`). The network maps (B, 3, H, W) to inverse depth (B, H', W') or
    (B, 1, H', W'), resized back to the image bicubically as MiDaS's run.py does.
    """

    def __init__(self, config: DepthConfig) -> None:
        import torch
        from transformers import DPTImageProcessor

        path = Path(resolve_model_ref(config.model))
        file = path if path.is_file() else next((path / n for n in _MIDAS_FILES if (path / n).is_file()), None)
        if file is None:
            raise FailedPrecondition(
                f"no MiDaS model file at {path}: give a file, or a folder with one of {', '.join(_MIDAS_FILES)}"
            )
        self._torch = torch
        self._device = config.device
        self._model = self._load(file, config.device)
        folder = file.parent
        has_processor = (folder / "preprocessor_config.json").is_file()
        self._processor = (
            DPTImageProcessor.from_pretrained(str(folder), local_files_only=True)
            if has_processor
            else midas_default_processor()
        )
        self.name = file.name if path.is_file() else path.name

    @staticmethod
    def _load(file: Path, device: str) -> Any:
        import torch

        if file.suffix == ".pt2":
            return torch.export.load(str(file)).module().to(device)  # an exported graph: already in eval mode
        scripted = False
        if zipfile.is_zipfile(file):  # TorchScript and torch.save archives are both zips; TorchScript's has constants
            with zipfile.ZipFile(file) as archive:
                scripted = any(name.endswith("/constants.pkl") for name in archive.namelist())
        if scripted:
            return torch.jit.load(str(file), map_location=device).eval()
        import timm  # noqa: F401  (the MiDaS modules in the pickle build on timm; fail here with a clear ImportError)

        model = torch.load(str(file), map_location=device, weights_only=False)
        if not isinstance(model, torch.nn.Module):
            raise FailedPrecondition(f"{file} holds a {type(model).__name__}, not a whole model: save the nn.Module")
        return model.eval()

    def predict(self, images: list[Image.Image]) -> list[np.ndarray]:
        maps = []
        for image in images:  # one at a time: MiDaS transforms keep the aspect ratio, so sizes differ
            pixels = self._processor(images=image, return_tensors="pt")["pixel_values"].to(self._device)
            with self._torch.inference_mode():
                predicted = self._model(pixels)
            if predicted.ndim == 4:
                predicted = predicted[:, 0]
            maps.extend(_post_process(self._processor, predicted, [(image.height, image.width)]))
        return maps


def check_boxes(boxes: Sequence[Sequence[float]] | None, max_boxes: int) -> list[Box]:
    """The boxes as float tuples, or InvalidArgument / ResourceExhausted saying which one is malformed."""
    if boxes is None:
        return []
    if isinstance(boxes, str | bytes) or not hasattr(boxes, "__len__"):
        raise InvalidArgument(f"boxes must be a list of (x0, y0, x1, y1); got {type(boxes).__name__}")
    if len(boxes) > max_boxes:
        raise ResourceExhausted(f"{len(boxes)} boxes in one request; the limit is {max_boxes}")
    checked = []
    for i, box in enumerate(boxes):
        try:
            values = tuple(float(v) for v in box)
        except (TypeError, ValueError):
            raise InvalidArgument(f"box {i} is not four numbers (x0, y0, x1, y1): {box!r}") from None
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise InvalidArgument(f"box {i} must be four finite numbers (x0, y0, x1, y1) in pixels; got {box!r}")
        checked.append(values)
    return checked  # type: ignore[return-value]


def box_region(box: Box, index: int, width: int, height: int) -> tuple[slice, slice]:
    """The rows and columns a box covers, clipped to the image; InvalidArgument if nothing of it is inside."""
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        raise InvalidArgument(
            f"box {index} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area inside the {width}x{height} image: give "
            "(x0, y0, x1, y1) in the image's pixels with x0 < x1 and y0 < y1"
        )
    # every pixel the box touches, at least one
    return slice(math.floor(cy0), math.ceil(cy1)), slice(math.floor(cx0), math.ceil(cx1))


def downsample(depth: np.ndarray, max_side: int) -> np.ndarray:
    """The map as float16 with its longest side at most `max_side`, aspect kept, area-averaged (PIL's box filter)."""
    height, width = depth.shape
    scale = max_side / max(height, width)
    if scale >= 1:
        return depth.astype(np.float16)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.ascontiguousarray(depth, dtype=np.float32)).resize(size, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).astype(np.float16)


def describe_distance(box_median_depth: Sequence[float], depth: np.ndarray) -> list[str]:
    """One word per box, near / middle / far: where its median inverse depth falls in the image's own depth
    distribution (top third of the map's values: near, bottom third: far); all middle on a flat map."""
    values = np.asarray(depth, dtype=np.float32)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ["middle"] * len(box_median_depth)
    far_below, near_above = (float(q) for q in np.quantile(values, [1 / 3, 2 / 3]))
    spread = float(values.max() - values.min())
    words = []
    for median in box_median_depth:
        if spread <= 1e-6 * max(abs(float(values.max())), 1.0) or not math.isfinite(median):
            words.append("middle")
        elif median >= near_above:
            words.append("near")
        elif median <= far_below:
            words.append("far")
        else:
            words.append("middle")
    return words


@serve.deployment(name="Depth", ray_actor_options={"num_cpus": 0.5})
class Depth:
    """Serves one depth engine; see the module docstring."""

    def __init__(self, config: DepthConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = DepthConfig.model_validate(config)
        default = TimmMidasEngine if self._config.backend == "timm_midas" else DPTEngine
        self._engine: DepthEngine = (engine_cls or default)(self._config)

    async def estimate(self, image: bytes, mime_type: str, boxes: Sequence[Box] = ()) -> DepthResult:
        checked = check_boxes(boxes, self._config.max_boxes)
        return await asyncio.to_thread(self._estimate, image, mime_type, checked)

    def _estimate(self, image: bytes, mime_type: str, boxes: list[Box]) -> DepthResult:
        picture = decode_image(image, mime_type, self._config.images)
        regions = [box_region(box, i, picture.width, picture.height) for i, box in enumerate(boxes)]
        [depth] = self._engine.predict([picture])
        medians = [float(np.median(depth[rows, cols])) for rows, cols in regions]
        small = downsample(depth, self._config.map_max_side)
        return DepthResult(depth=small, width=small.shape[1], height=small.shape[0], box_median_depth=medians)

    def info(self) -> dict[str, Any]:
        return {"model": self._engine.name, "backend": self._config.backend, "map_max_side": self._config.map_max_side}
