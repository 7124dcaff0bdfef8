"""Image generation with diffusers: text to image, image to image, instruction edits, ControlNet, LoRA, x4 upscale.

In (by handle, streaming: `handle.options(stream=True).generate.remote(prompt, ...)`): a prompt and options; an
init image / control image as encoded bytes + mime type. Out: one `ImageProgress(step, total_steps)` after every
denoising step, then one `ImageOutput` (PNG bytes, size, the seed that reproduces it, steps, mode, model name).

The base model is a text-to-image pipeline folder (SDXL on the cluster, a tiny SD in tests) loaded with
`AutoPipelineForText2Image`; image to image reuses its components through `AutoPipelineForImage2Image.from_pipe`
(nothing loaded twice), and so does ControlNet. InstructPix2Pix and the x4 upscaler are separate models. Everything
configured is loaded when the replica starts, not on first use: a replica's memory is then what the placement plan
estimates from its config, a wrong path fails the deployment rather than a user's request, and no request waits
for a multi-GB load while holding the replica's only pipeline.

Closing the stream stops the denoising loop at the next step: the step callback raises. diffusers 0.42's own
`pipe._interrupt` flag is checked only by some pipelines (SD, SDXL, ControlNet; not InstructPix2Pix or the
upscaler), and there it skips the remaining steps but still decodes the latents with the VAE; raising from the
callback stops every pipeline at once and decodes nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from PIL import Image
from ray import serve

from almquist.config import ImageGenConfig, model_name, resolve_model_ref
from almquist.errors import AlmquistError, FailedPrecondition, InvalidArgument, ResourceExhausted
from almquist.images import decode_image, encode_png
from deployments.stepped import Finished, SteppedRunner

MODES = ("text_to_image", "image_to_image", "instruct_edit", "upscale")
_MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit seed; keep it positive for clients' int64 fields


@dataclass(frozen=True)
class ImageRequest:
    """One generation, every value resolved (the deployment turns 0 / "" into config defaults and a random seed)."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 25
    seed: int = 0
    width: int = 512  # the output's size; an init image is resized to it (to a quarter of it for the x4 upscaler)
    height: int = 512
    mode: str = "text_to_image"
    init_image: Image.Image | None = None
    strength: float = 0.8
    guidance_scale: float = 7.0
    control_image: Image.Image | None = None
    loras: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageProgress:
    """Sent after each denoising step: `step` counts from 1 to `total_steps`, the steps this request runs (`steps`;
    for image_to_image the last `steps x strength` of them, as diffusers skips the ones the init image replaces)."""

    step: int
    total_steps: int


@dataclass(frozen=True)
class ImageOutput:
    """The image (PNG) and what reproduces it: send `seed`, `steps`, `mode` and the size back for the same pixels."""

    png: bytes
    width: int
    height: int
    seed: int
    steps: int
    mode: str
    model: str


class ImageEngine(Protocol):
    upscale_factor: int

    def __init__(self, config: ImageGenConfig) -> None: ...

    def generate(self, request: ImageRequest, on_step: Callable[[int, int], None]) -> Image.Image: ...


class DiffusersEngine:
    """diffusers pipelines on CPU or GPU; one generation at a time (the pipelines share a scheduler and adapters)."""

    def __init__(self, config: ImageGenConfig) -> None:
        import torch
        from diffusers import (
            AutoPipelineForImage2Image,
            AutoPipelineForText2Image,
            ControlNetModel,
            DiffusionPipeline,
            StableDiffusionControlNetPipeline,
            StableDiffusionUpscalePipeline,
            StableDiffusionXLControlNetPipeline,
            StableDiffusionXLPipeline,
        )

        self._config = config
        self._device = config.device
        self._dtype = getattr(torch, config.dtype)
        self._lock = threading.Lock()
        # diffusers 0.42 renamed `torch_dtype` to `dtype` (the old name still works, with a deprecation warning)
        load = {"local_files_only": True, "dtype": self._dtype}
        self._text = AutoPipelineForText2Image.from_pretrained(resolve_model_ref(config.model), **load).to(self._device)
        self._image = AutoPipelineForImage2Image.from_pipe(self._text)  # the same modules: no second copy
        self._control = None
        if config.controlnet:
            controlnet = ControlNetModel.from_pretrained(resolve_model_ref(config.controlnet), **load).to(self._device)
            sdxl = isinstance(self._text, StableDiffusionXLPipeline)
            control_cls = StableDiffusionXLControlNetPipeline if sdxl else StableDiffusionControlNetPipeline
            # DiffusionPipeline.from_pipe casts the new pipeline, shared modules included, to `dtype`, float32 when
            # not given: without it an fp16 SDXL would silently turn float32 (twice the memory) for every mode
            self._control = control_cls.from_pipe(self._text, controlnet=controlnet, dtype=self._dtype)
        if config.loras and importlib.util.find_spec("peft") is None:
            raise FailedPrecondition("image_gen.loras needs the peft package (pip install peft), or remove loras")
        for name, ref in config.loras.items():  # into the shared UNet / text encoder: every derived pipeline has them
            self._text.load_lora_weights(resolve_model_ref(ref), adapter_name=name)
        self._instruct = None
        if config.instruct_model:
            # DiffusionPipeline reads the class from model_index.json: SD or SDXL InstructPix2Pix
            self._instruct = DiffusionPipeline.from_pretrained(resolve_model_ref(config.instruct_model), **load)
            if "InstructPix2Pix" not in type(self._instruct).__name__:
                raise FailedPrecondition(
                    f"image_gen.instruct_model {config.instruct_model} holds a {type(self._instruct).__name__}, "
                    "not an InstructPix2Pix pipeline"
                )
            self._instruct.to(self._device)
        self._upscale = None
        if config.upscaler:
            path = resolve_model_ref(config.upscaler)
            self._upscale = StableDiffusionUpscalePipeline.from_pretrained(path, **load).to(self._device)
        # the upscaler's latents are the input's size; its VAE makes them `vae_scale_factor` times larger
        self.upscale_factor = int(self._upscale.vae_scale_factor) if self._upscale is not None else 4
        for pipe in (self._text, self._image, self._control, self._instruct, self._upscale):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)  # progress goes to the client, not to the replica's log

    def generate(self, request: ImageRequest, on_step: Callable[[int, int], None]) -> Image.Image:
        import torch

        with self._lock:
            generator = torch.Generator(self._device).manual_seed(request.seed)
            common: dict[str, Any] = {
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt or None,  # None lets SDXL use its zeroed empty prompt
                "num_inference_steps": request.steps,
                "guidance_scale": request.guidance_scale,
                "generator": generator,
            }
            size = (request.width, request.height)
            try:
                if request.mode == "upscale":
                    return self._run_upscale(request, common, on_step)
                common["callback_on_step_end"] = _step_callback(on_step)
                if request.mode == "instruct_edit":
                    assert self._instruct is not None and request.init_image is not None  # ImageGen.generate checks
                    return self._instruct(image=_resized(request.init_image, size), **common).images[0]
                self._use_loras(request.loras)
                if request.mode == "image_to_image":
                    assert request.init_image is not None  # ImageGen.generate checks
                    image = _resized(request.init_image, size)
                    return self._image(image=image, strength=request.strength, **common).images[0]
                if request.control_image is not None:
                    assert self._control is not None  # ImageGen.generate checks image_gen.controlnet
                    control = _resized(request.control_image, size)
                    return self._control(image=control, width=size[0], height=size[1], **common).images[0]
                return self._text(width=size[0], height=size[1], **common).images[0]
            except torch.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise ResourceExhausted(
                    f"out of accelerator memory for a {size[0]}x{size[1]} {request.mode}: ask for a smaller size"
                ) from None

    def _run_upscale(
        self, request: ImageRequest, common: dict[str, Any], on_step: Callable[[int, int], None]
    ) -> Image.Image:
        pipe = self._upscale
        assert pipe is not None and request.init_image is not None  # ImageGen.generate checks
        low = (request.width // self.upscale_factor, request.height // self.upscale_factor)

        def callback(step: int, timestep: Any, latents: Any) -> None:  # the upscaler has only the legacy callback
            on_step(step + 1, len(pipe.scheduler.timesteps))

        image = _resized(request.init_image, low)
        return pipe(image=image, callback=callback, callback_steps=1, **common).images[0]

    def _use_loras(self, names: tuple[str, ...]) -> None:
        if not self._config.loras:
            return
        if names:
            self._text.enable_lora()
            self._text.set_adapters(list(names))
        else:
            self._text.disable_lora()


def _step_callback(on_step: Callable[[int, int], None]) -> Callable[..., dict]:
    def callback(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        on_step(step + 1, int(pipe.num_timesteps))
        return {}  # no tensor changed

    return callback


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


@serve.deployment(name="ImageGen", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=4)
class ImageGen:
    """Serves one image engine; see the module docstring."""

    def __init__(self, config: ImageGenConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = ImageGenConfig.model_validate(config)
        c = self._config
        if c.min_size > c.max_size or not c.min_size <= c.default_size <= c.max_size or c.default_size % 8:
            raise ValueError(
                f"image_gen sizes: default_size {c.default_size} must be a multiple of 8 within "
                f"[min_size {c.min_size}, max_size {c.max_size}]"
            )
        if c.default_steps > c.max_steps:
            raise ValueError(f"image_gen default_steps {c.default_steps} is over max_steps {c.max_steps}")
        self._engine: ImageEngine = (engine_cls or DiffusersEngine)(self._config)
        self._runner = SteppedRunner()

    async def generate(self, prompt: str, **options: Any) -> AsyncIterator[ImageProgress | ImageOutput]:
        """Progress after every denoising step, then the image. `options` are `resolve`'s keywords: 0 / "" mean
        the config's defaults; seed 0 picks a random seed, reported in the output; mode "" is image_to_image with
        an init image, else text_to_image."""
        request = self.resolve(prompt, **options)

        def render(on_step: Callable[[int, int], None]) -> tuple[bytes, int, int]:
            image = self._engine.generate(request, on_step)
            return encode_png(image), image.width, image.height

        # aclosing: closing this stream closes the runner's at once, which stops the engine before returning
        async with contextlib.aclosing(self._runner.run(render, ImageProgress)) as items:
            async for item in items:
                if not isinstance(item, Finished):
                    yield item
        png, width, height = item.result
        yield ImageOutput(png, width, height, request.seed, request.steps, request.mode, self._model_of(request))

    def resolve(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        steps: int = 0,
        seed: int = 0,
        width: int = 0,
        height: int = 0,
        mode: str = "",
        init_image: tuple[bytes, str] | None = None,
        strength: float = 0.0,
        guidance_scale: float = 0.0,
        control_image: tuple[bytes, str] | None = None,
        loras: Sequence[str] = (),
    ) -> ImageRequest:
        """The request `generate` would run (defaults filled, images decoded), or the error that refuses it."""
        c = self._config
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidArgument("the prompt is empty: describe the picture to draw (or the edit to make)")
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if not isinstance(text, str):
                raise InvalidArgument(f"{name} must be text")
            if len(text) > c.max_prompt_chars:
                raise ResourceExhausted(f"the {name} has {len(text)} characters; the limit is {c.max_prompt_chars}")
        if steps < 0:
            raise InvalidArgument(f"steps is {steps}: ask for 1 to {c.max_steps} (0 means {c.default_steps})")
        if steps > c.max_steps:
            raise InvalidArgument(f"{steps} denoising steps asked; the limit is {c.max_steps}")
        if not 0 <= seed <= _MAX_SEED:
            raise InvalidArgument(f"seed {seed} is out of range: use 1 to {_MAX_SEED} (0 picks a random seed)")
        if not math.isfinite(strength) or not 0 <= strength <= 1:
            raise InvalidArgument(f"strength {strength} is outside (0, 1]: 1 redraws everything, 0.3 keeps a lot")
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise InvalidArgument(f"guidance_scale {guidance_scale} must be a positive number (0 means the default)")

        mode = mode or ("image_to_image" if init_image is not None else "text_to_image")
        if mode not in MODES:
            raise InvalidArgument(f"unknown mode {mode!r}; use one of {list(MODES)}")
        if mode == "instruct_edit" and not c.instruct_model:
            raise FailedPrecondition(
                "instruct_edit is not configured: set image_gen.instruct_model to an InstructPix2Pix pipeline folder"
            )
        if mode == "upscale" and not c.upscaler:
            raise FailedPrecondition("upscale is not configured: set image_gen.upscaler to an x4 upscaler folder")
        if control_image is not None:
            if not c.controlnet:
                raise FailedPrecondition(
                    "a control_image needs a ControlNet: set image_gen.controlnet to a ControlNet model folder"
                )
            if mode != "text_to_image":
                raise InvalidArgument(f"a control_image steers text_to_image only, not {mode}: send no init_image")
        names = (loras,) if isinstance(loras, str) else tuple(dict.fromkeys(loras))
        if names:
            if not c.loras:
                raise FailedPrecondition("no LoRA adapters are configured: add them to image_gen.loras (name: folder)")
            unknown = [name for name in names if name not in c.loras]
            if unknown:
                raise InvalidArgument(f"unknown LoRA {', '.join(map(repr, unknown))}; configured: {sorted(c.loras)}")
            if mode not in ("text_to_image", "image_to_image"):
                raise InvalidArgument(f"LoRAs apply to text_to_image and image_to_image, not {mode}")
        if mode == "text_to_image" and init_image is not None:
            raise InvalidArgument("text_to_image takes no init_image: leave mode empty or use image_to_image")
        if mode != "text_to_image" and init_image is None:
            raise InvalidArgument(f"mode {mode} needs an init_image: send the picture to work on")

        multiple = 8 * self._engine.upscale_factor if mode == "upscale" else 8
        for name, value in (("width", width), ("height", height)):
            if value:
                self._check_side(name, value, multiple)
        init = self._decode("init_image", init_image) if init_image is not None else None
        control = self._decode("control_image", control_image) if control_image is not None else None
        width, height = self._size(mode, width, height, init)
        return ImageRequest(
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=steps or c.default_steps,
            seed=seed or secrets.randbelow(2**31 - 1) + 1,  # never 0: the reported seed must reproduce the image
            width=width,
            height=height,
            mode=mode,
            init_image=init,
            strength=strength or c.strength,
            guidance_scale=guidance_scale or c.guidance_scale,
            control_image=control,
            loras=names,
        )

    def stats(self) -> dict[str, int]:
        """Generations completed, cancelled by the client, failed; denoising steps run."""
        return asdict(self._runner.stats)

    def info(self) -> dict[str, Any]:
        c = self._config
        return {
            "model": model_name(c.model),
            "modes": [
                m for m in MODES if (m != "instruct_edit" or c.instruct_model) and (m != "upscale" or c.upscaler)
            ],
            "controlnet": bool(c.controlnet),
            "loras": sorted(c.loras),
            "default_steps": c.default_steps,
            "max_steps": c.max_steps,
            "default_size": c.default_size,
            "min_size": c.min_size,
            "max_size": c.max_size,
        }

    def _check_side(self, name: str, value: int, multiple: int) -> None:
        c = self._config
        if not c.min_size <= value <= c.max_size:
            raise InvalidArgument(f"{name} {value} is outside [{c.min_size}, {c.max_size}] pixels (0 means default)")
        if value % multiple:
            below = value // multiple * multiple
            why = "" if multiple == 8 else " (upscale makes the picture 4x larger from sides that are multiples of 8)"
            raise InvalidArgument(
                f"{name} {value} is not a multiple of {multiple}{why}: use {below or multiple} or {below + multiple}"
            )

    def _size(self, mode: str, width: int, height: int, init: Image.Image | None) -> tuple[int, int]:
        """The output size: asked, else the default (text), the init image's shape at the default size (edits), or
        the init image times the upscale factor (upscale)."""
        c = self._config
        if init is None:
            return width or c.default_size, height or c.default_size
        if width and height:
            return width, height
        iw, ih = init.size
        if mode == "upscale":
            factor = self._engine.upscale_factor
            if not width and not height:
                width, height = iw * factor, ih * factor
            elif not height:
                height = round(width * ih / iw)
            else:
                width = round(height * iw / ih)
            width, height = width // (8 * factor) * 8 * factor, height // (8 * factor) * 8 * factor
            if not (c.min_size <= width <= c.max_size and c.min_size <= height <= c.max_size):
                raise InvalidArgument(
                    f"upscaling the {iw}x{ih} init_image gives {width}x{height}, outside [{c.min_size}, {c.max_size}]"
                    f" pixels per side: send a picture of at most {c.max_size // factor} pixels per side"
                )
            return width, height
        if width:
            height = _round_to(width * ih / iw, 8)
        elif height:
            width = _round_to(height * iw / ih, 8)
        else:  # the init image's shape, its longest side at the default size
            scale = c.default_size / max(iw, ih)
            width, height = _round_to(iw * scale, 8), _round_to(ih * scale, 8)
        low, high = -(-c.min_size // 8) * 8, c.max_size // 8 * 8
        return min(max(width, low), high), min(max(height, low), high)

    def _decode(self, name: str, value: Any) -> Image.Image:
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], (bytes, bytearray))):
            raise InvalidArgument(f"{name} must be (encoded bytes, mime type)")
        data, mime_type = value
        try:
            return decode_image(bytes(data), mime_type or "", self._config.images)
        except AlmquistError as error:
            raise type(error)(f"{name}: {error.message}") from None

    def _model_of(self, request: ImageRequest) -> str:
        c = self._config
        if request.mode == "instruct_edit":
            return model_name(c.instruct_model or "")
        if request.mode == "upscale":
            return model_name(c.upscaler or "")
        name = model_name(c.model)
        if request.control_image is not None and c.controlnet:
            name += f"+{model_name(c.controlnet)}"
        if request.loras:
            name += f"+lora:{','.join(request.loras)}"
        return name
