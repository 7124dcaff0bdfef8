"""Tiny vision models built from a config and saved to disk, so tests load them through the real loading path.

Each builder writes a model folder under `path` and returns the folder to put in the deployment's config
(`model:`). Nothing here is downloaded: configs are small, weights random (seeded), processors built in code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_tiny_owlvit(path: Path) -> str:
    """An OWL-ViT detector (`OwlViTForObjectDetection` + `OwlViTProcessor`) small enough for a CPU test."""
    return _save_tiny_owl(path, "owlvit")


def _save_tiny_owlv2(path: Path) -> str:
    """The OWLv2 variant (`Owlv2ForObjectDetection` + `Owlv2Processor`: images padded square, an objectness head)."""
    return _save_tiny_owl(path, "owlv2")


def _save_tiny_owl(path: Path, backend: str) -> str:
    import torch
    import transformers

    family = {"owlvit": "OwlViT", "owlv2": "Owlv2"}[backend]
    tokenizer = _tiny_clip_tokenizer()
    # OWL-ViT pools each query at its highest token id, so <|endoftext|> must be the last id (as in CLIP's vocab)
    config = getattr(transformers, f"{family}Config")(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = getattr(transformers, f"{family}ForObjectDetection")(config).eval()
    # The default init saturates the heads (logits near +-36, boxes of zero width at the image edge), which leaves
    # nothing for thresholds and NMS to do. Fan-in scaled heads give scores spread over (0, 1) and boxes about half
    # the image wide around each patch, so neighbours overlap and NMS has boxes to merge.
    generator = torch.Generator().manual_seed(0)
    width = config.vision_config.hidden_size
    heads = [(model.box_head, 0.3)] + ([(model.objectness_head, 1.0)] if backend == "owlv2" else [])
    with torch.no_grad():
        for head, out_std in heads:
            for layer, std in ((head.dense0, 1.0), (head.dense1, 1.0), (head.dense2, out_std)):
                layer.weight.normal_(0.0, std / width**0.5, generator=generator)
                layer.bias.zero_()
        model.box_head.dense2.bias[2:].fill_(1.0)  # sizes: sigmoid(logit(patch share) + 1), about twice a patch
        for layer, std, bias in ((model.class_head.logit_shift, 1.0, 0.0), (model.class_head.logit_scale, 0.3, 1.0)):
            layer.weight.normal_(0.0, std / width**0.5, generator=generator)
            layer.bias.fill_(bias)
    size = {"height": 64, "width": 64}
    image_processor = (
        transformers.Owlv2ImageProcessor(size=size)
        if backend == "owlv2"
        else transformers.OwlViTImageProcessor(size=size, crop_size=size)
    )
    processor = getattr(transformers, f"{family}Processor")(image_processor=image_processor, tokenizer=tokenizer)
    folder = Path(path) / f"tiny-{backend}"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


# Words the tiny CLIP tokenizer merges into whole-word tokens; anything else is spelled out byte by byte.
_OWL_WORDS = ("a", "an", "the", "photo", "of", "cat", "dog", "person", "car", "cup", "bird", "red", "blue", "ball")


def _tiny_clip_tokenizer():
    """A CLIP BPE tokenizer built offline: CLIP's byte alphabet (each byte also with the end-of-word mark `</w>`),
    merges that spell `_OWL_WORDS` as single tokens, and the special tokens last, as in CLIP's own vocab."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(f"{char}</w>" for char in alphabet)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _OWL_WORDS:
        parts = [*word[:-1], f"{word[-1]}</w>"]
        while len(parts) > 1:  # merge left to right: ("p","h") -> "ph", ("ph","o") -> "pho", ...
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


def save_tiny_dpt(path: Path) -> str:
    """A DPT depth model (`DPTForDepthEstimation` + `DPTImageProcessor`), the MiDaS v3 architecture."""
    import math

    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        backbone_out_indices=[0, 1],  # both layers feed the neck: two reassemble/fusion stages
        neck_hidden_sizes=[16, 32],
        reassemble_factors=[2, 1],
        fusion_hidden_size=16,
        use_auxiliary_head=False,
    )
    model = DPTForDepthEstimation(config).eval()
    # DPT's init (std 0.02, zero embeddings) gives a flat map; fan-in scaled weights and a positive last bias give a
    # map that varies across the image, so box medians and near/far are worth testing
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.ndim > 1:
                weight.normal_(0.0, 1.0 / math.sqrt(weight[0].numel()), generator=generator)
            elif "embeddings" in name:
                weight.normal_(0.0, 1.0, generator=generator)
        model.head.head[-2].bias.fill_(1.0)
    processor = DPTImageProcessor(
        size={"height": 64, "width": 64},
        keep_aspect_ratio=False,
        resample=3,  # bicubic, as MiDaS
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    folder = Path(path) / "tiny-dpt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def _tiny_midas_class() -> type:
    """A MiDaS-style network (timm ViT backbone, intermediate feature maps fused and upsampled to inverse depth),
    created on first use so importing this module does not import torch; published as `_TinyMidas` in this module
    so a pickled whole model (`torch.save(model)`) loads back in the same process."""
    if "_TinyMidas" in globals():
        return globals()["_TinyMidas"]
    import timm
    import torch

    class _TinyMidas(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone: Any = timm.create_model(  # a timm VisionTransformer (forward_intermediates)
                "vit_tiny_patch16_224", pretrained=False, img_size=64, embed_dim=32, depth=2, num_heads=2, num_classes=0
            )
            self.fuse = torch.nn.Conv2d(64, 16, kernel_size=3, padding=1)
            self.head = torch.nn.Conv2d(16, 1, kernel_size=1)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            features = self.backbone.forward_intermediates(pixels, indices=2, intermediates_only=True)
            hidden = torch.relu(self.fuse(torch.cat(features, dim=1)))
            hidden = torch.nn.functional.interpolate(hidden, size=pixels.shape[-2:], mode="bilinear")
            return torch.relu(self.head(hidden) + 1.0).squeeze(1)  # (B, H, W) like MiDaS's DPTDepthModel

    _TinyMidas.__module__, _TinyMidas.__qualname__ = __name__, "_TinyMidas"
    globals()["_TinyMidas"] = _TinyMidas
    return _TinyMidas


def _save_tiny_timm_midas(path: Path, file_format: str = "torchscript") -> str:
    """A tiny MiDaS-style network saved as one file, as `TimmMidasEngine` loads it: `file_format` "torchscript"
    (traced, model.pt), "export" (torch.export, model.pt2) or "pickle" (torch.save of the module, model.pth); plus
    the 64x64 DPTImageProcessor beside it. Returns the folder."""
    import warnings

    import torch
    from transformers import DPTImageProcessor

    torch.manual_seed(0)
    model = _tiny_midas_class()().eval()
    example = torch.zeros(1, 3, 64, 64)
    folder = Path(path) / f"tiny-midas-{file_format}"
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if file_format == "torchscript":
            with warnings.catch_warnings():  # tracing is deprecated in favour of torch.export, and says so at length
                warnings.simplefilter("ignore")
                torch.jit.trace(model, example).save(str(folder / "model.pt"))
        elif file_format == "export":
            torch.export.save(torch.export.export(model, (example,)), str(folder / "model.pt2"))
        elif file_format == "pickle":
            torch.save(model, folder / "model.pth")
        else:
            raise ValueError(f"unknown file_format {file_format!r}")
    DPTImageProcessor(
        size={"height": 64, "width": 64}, resample=3, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    ).save_pretrained(folder)
    return str(folder)


def save_tiny_sam(path: Path) -> str:
    """A SAM model (`SamModel` + `SamProcessor`)."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    # SAM's shape constraints: the prompt encoder, the mask decoder and the vision neck's output_channels share one
    # width (16 here), the shared positional embedding is 2 x num_pos_feats of that width, and the image embedding
    # is image_size / patch_size = 4 cells a side; windows of 2 cells tile it, the last layer attends globally.
    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
            "window_size": 2,
            "global_attn_indexes": [1],
            "num_pos_feats": 8,
            "mlp_dim": 64,
        },
        prompt_encoder_config={"hidden_size": 16, "image_size": 64, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 16,
            "mlp_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 16,
        },
    )
    model = SamModel(config).eval()
    processor = SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": 64},
            pad_size={"height": 64, "width": 64},
            mask_size={"longest_edge": 16},
            mask_pad_size={"height": 16, "width": 16},
        )
    )
    folder = Path(path) / "tiny-sam"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def save_tiny_stable_diffusion(path: Path) -> str:
    """A Stable Diffusion pipeline folder (UNet, VAE, CLIP text encoder, tokenizer, scheduler)."""
    from diffusers import StableDiffusionPipeline

    folder = Path(path) / "tiny-stable-diffusion"
    components = _tiny_sd_components(unet_in_channels=4)
    StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ).save_pretrained(folder)
    return str(folder)


def save_tiny_instruct_pix2pix(path: Path) -> str:
    """An InstructPix2Pix pipeline folder: the tiny SD parts with a UNet that also reads the input image's latents."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    folder = Path(path) / "tiny-instruct-pix2pix"
    components = _tiny_sd_components(unet_in_channels=8)  # 4 noisy latents + 4 latents of the image to edit
    StableDiffusionInstructPix2PixPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ).save_pretrained(folder)
    return str(folder)


def save_tiny_controlnet(path: Path) -> str:
    """A ControlNet folder matching the tiny SD UNet (same blocks, cross-attention width and latent scale)."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(3)
    controlnet = ControlNetModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        # one 2x downsample: the tiny VAE's latents are half the image size (a real ControlNet downsamples 8x)
        conditioning_embedding_out_channels=(16, 32),
    )
    # ControlNet's output convolutions start at zero (a fresh ControlNet changes nothing); give them weights so a
    # test can see the control image steer the result
    with torch.no_grad():
        for module in [
            controlnet.controlnet_cond_embedding.conv_out,
            *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
        ]:
            module.weight.normal_(0, 1.0)
            module.bias.normal_(0, 1.0)
    folder = Path(path) / "tiny-controlnet"
    controlnet.save_pretrained(folder)
    return str(folder)


def save_tiny_sd_upscaler(path: Path) -> str:
    """A Stable Diffusion x4 upscaler pipeline folder: 7-channel UNet (latents + low-res image), noise-level
    class embedding, a 3-block VAE (4x between latents and pixels)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(4)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        num_class_embeds=400,  # the noise level (up to max_noise_level=350) is fed as a class label
    )
    torch.manual_seed(5)
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=4,
        scaling_factor=0.08333,
    )
    parts = _tiny_sd_components(unet_in_channels=4)
    pipeline = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )
    folder = Path(path) / "tiny-sd-upscaler"
    pipeline.save_pretrained(folder)
    return str(folder)


def save_tiny_sd_lora(path: Path) -> str:
    """LoRA weights for the tiny SD UNet's attention projections, in diffusers' (PEFT) layout, rank 4, random
    (non-zero) so loading them changes the image."""
    import torch
    from diffusers import StableDiffusionPipeline

    unet = _tiny_sd_components(unet_in_channels=4)["unet"]
    generator = torch.Generator().manual_seed(6)
    layers: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v"):
            layers[f"{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator) * 0.3
            layers[f"{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.3
    folder = Path(path) / "tiny-sd-lora"
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    return str(folder)


_SD_PROMPTS = (
    "a photo of a cat sitting on a red chair",
    "an astronaut riding a horse on the moon, digital art",
    "a watercolor painting of a lighthouse at sunset",
    "make it snowy; turn the sky purple; add a dog",
    "a bowl of fruit, oil painting, high detail",
)


def _tiny_sd_components(unet_in_channels: int) -> dict:
    """UNet, VAE, text encoder, tokenizer and scheduler at diffusers' test sizes, seeded, so every builder that
    shares them (SD, InstructPix2Pix, ControlNet, LoRA) gets the same weights."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,  # latents of a 64x64 image (the tiny VAE halves each side)
        in_channels=unet_in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(1)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        sample_size=64,
    )
    tokenizer = _tiny_sd_clip_tokenizer()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=1000,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            layer_norm_eps=1e-5,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def _tiny_sd_clip_tokenizer():
    """A CLIP tokenizer built offline: every byte (alone and word-final) in the vocabulary, so any text tokenizes
    without unknowns, plus BPE merges learned from a few prompts (ties broken by the pair, so the same every run)."""
    import re
    from collections import Counter
    from itertools import pairwise

    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    # CLIP's own word split (lower case); the prompts are ASCII, whose byte-level symbols are the characters
    words = Counter(w for p in _SD_PROMPTS for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", p.lower()))
    corpus = {(*w[:-1], w[-1] + "</w>"): n for w, n in words.items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < 200:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, n in corpus.items():
            for pair in pairwise(symbols):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        corpus = {_merge_pair(symbols, best): n for symbols, n in corpus.items()}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    known = set(tokens)
    tokens += list(dict.fromkeys(a + b for a, b in merges if a + b not in known))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)
