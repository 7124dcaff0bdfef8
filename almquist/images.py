"""Image codec for every vision family: encoded bytes in, a checked RGB `PIL.Image` out (and PNG bytes back).

`open_image` checks the header only; `decode_image` also decodes the pixels. Bad input is refused before any
model sees it, with the status a client can act on: INVALID_ARGUMENT for
empty, corrupt, truncated or unsupported bytes and 0x0 images; RESOURCE_EXHAUSTED for images over the limits
(bytes, longest side, pixels). The size is read from the header first, so a decompression bomb is refused
without being decoded.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from almquist.config import ImageLimits
from almquist.errors import InvalidArgument, ResourceExhausted

_MIME_FORMATS = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


def open_image(data: bytes, mime_type: str = "", limits: ImageLimits | None = None) -> Image.Image:
    """The image in `data`, opened but not decoded: format, size and limits checked from the header alone, so
    it is cheap enough for an event loop (the Converse ingress checks pictures this way before queueing them)."""
    limits = limits or ImageLimits()
    if not data:
        raise InvalidArgument("the image is empty (0 bytes): send JPEG or PNG bytes")
    if len(data) > limits.max_bytes:
        raise ResourceExhausted(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    if mime_type and mime_type.lower().strip() not in _MIME_FORMATS:
        raise InvalidArgument(
            f"unsupported image type {mime_type!r}; send one of {sorted(set(_MIME_FORMATS) - {'image/jpg'})}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as error:
        raise InvalidArgument(f"the bytes are not a readable image ({error.__class__.__name__})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ResourceExhausted(
            f"the image is too large to decode safely; the limit is {limits.max_pixels} pixels"
        ) from None
    if image.format not in limits.formats:
        raise InvalidArgument(f"unsupported image format {image.format}; send one of {list(limits.formats)}")
    width, height = image.size
    if width == 0 or height == 0:
        raise InvalidArgument(f"the image is {width}x{height}: it has no pixels")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise ResourceExhausted(
            f"the image is {width}x{height}; the limits are {limits.max_side} pixels per side and "
            f"{limits.max_pixels} pixels in all: scale it down"
        )
    return image


def decode_image(data: bytes, mime_type: str = "", limits: ImageLimits | None = None) -> Image.Image:
    """The image in `data` as RGB, or an AlmquistError that says what is wrong with it."""
    image = open_image(data, mime_type, limits)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidArgument(f"the image is truncated or corrupt: {error}") from None
    return image.convert("RGB")


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
