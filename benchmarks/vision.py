"""Vision throughput: images per second per deployment through Serve versus the library called directly (same
model, same images), and what Serve batching (`@serve.batch`) does for detection.

Run: `python -m benchmarks.vision [--images 32] [--repeats 3]`. Model folders come from the flags (`--detection`,
`--depth`, `--segmentation`, `--image-gen`); without them tiny models are built from configs (tests/tiny_vision),
so the figures then measure the serving overhead around a very small model, not a real model's speed. Prints, per
path, the median images/s over the repeats and its ratio to the library-direct baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from almquist.config import DepthConfig, DetectionConfig, ImageGenConfig, SegmentationConfig

console = Console(width=150)
QUERIES = ["a cat", "a dog", "a car"]


def images(count: int, size: tuple[int, int] = (320, 240)) -> list[bytes]:
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="JPEG")
        encoded.append(buffer.getvalue())
    return encoded


def rate(run: Callable[..., Any], items: int, repeats: int) -> float:
    """Median items per second over `repeats` runs (one warm-up first). `run` is called with no arguments (a lambda
    may bind loop values as defaults)."""
    run()
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


def serve_concurrent(handle: Any, method: str, calls: list[tuple]) -> Callable[[], Any]:
    """All calls in flight at once through the handle (what concurrent clients do)."""

    def run() -> Any:
        return [r.result() for r in [getattr(handle, method).remote(*args) for args in calls]]

    return run


def serve_sequential(handle: Any, method: str, calls: list[tuple]) -> Callable[[], Any]:
    def run() -> Any:
        return [getattr(handle, method).remote(*args).result() for args in calls]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="detection batch size (library and @serve.batch)")
    parser.add_argument("--detection")
    parser.add_argument("--depth")
    parser.add_argument("--segmentation")
    parser.add_argument("--image-gen")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray
    from ray import serve

    from almquist.images import decode_image
    from deployments.depth import Depth
    from deployments.detection import Detector, OwlViTEngine
    from deployments.image_gen import DiffusersEngine, ImageGen, ImageRequest
    from deployments.segmentation import SamEngine, Segmentation
    from graphs.handles import streaming

    work = Path(tempfile.mkdtemp(prefix="almquist-bench-vision-"))
    if not (args.detection and args.depth and args.segmentation and args.image_gen):
        from tests import tiny_vision

    detection = DetectionConfig(
        model=args.detection or tiny_vision.save_tiny_owlvit(work / "owl"),
        device=args.device,
        max_batch_size=args.batch,
    )
    depth = DepthConfig(model=args.depth or tiny_vision.save_tiny_dpt(work / "dpt"), device=args.device)
    segmentation = SegmentationConfig(
        model=args.segmentation or tiny_vision.save_tiny_sam(work / "sam"), device=args.device
    )
    image_gen = ImageGenConfig(
        model=args.image_gen or tiny_vision.save_tiny_stable_diffusion(work / "sd"),
        device=args.device,
        default_size=64 if not args.image_gen else 512,
        default_steps=4,
    )
    encoded = images(args.images)
    decoded = [decode_image(data) for data in encoded]
    rows: list[tuple[str, str, float, float]] = []  # (deployment, path, images/s, ratio to the library)

    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        # ----- detection: library one by one, library batched, Serve with and without @serve.batch
        engine = OwlViTEngine(detection)
        thresholds = [detection.score_threshold]
        one_by_one = rate(
            lambda: [engine.detect_batch([im], [QUERIES], thresholds) for im in decoded], len(decoded), args.repeats
        )

        def batched() -> None:
            for i in range(0, len(decoded), args.batch):
                chunk = decoded[i : i + args.batch]
                engine.detect_batch(chunk, [QUERIES] * len(chunk), thresholds * len(chunk))

        library_batched = rate(batched, len(decoded), args.repeats)
        calls = [(data, "image/jpeg", QUERIES, 0.0) for data in encoded]
        batching = serve.run(Detector.bind(detection), name="bench-detection", route_prefix=None)  # type: ignore[attr-defined]
        served_batched = rate(serve_concurrent(batching, "detect", calls), len(calls), args.repeats)
        served_sequential = rate(serve_sequential(batching, "detect", calls), len(calls), args.repeats)
        no_batching = serve.run(
            Detector.bind(detection.model_copy(update={"max_batch_size": 1})),  # type: ignore[attr-defined]
            name="bench-detection-1",
            route_prefix=None,
        )
        served_unbatched = rate(serve_concurrent(no_batching, "detect", calls), len(calls), args.repeats)
        rows += [
            ("Detection", "library, one image per call (baseline)", one_by_one, 1.0),
            ("Detection", f"library, batches of {args.batch}", library_batched, library_batched / one_by_one),
            ("Detection", "Serve, one request at a time", served_sequential, served_sequential / one_by_one),
            ("Detection", "Serve, concurrent, @serve.batch off (1)", served_unbatched, served_unbatched / one_by_one),
            (
                "Detection",
                f"Serve, concurrent, @serve.batch {args.batch}",
                served_batched,
                served_batched / one_by_one,
            ),
        ]
        serve.delete("bench-detection")
        serve.delete("bench-detection-1")

        # ----- depth and segmentation: the library on each image versus Serve with concurrent requests
        from deployments.depth import DPTEngine

        for name, deployment, engine_run, method, call in (
            ("Depth", Depth.bind(depth), lambda e: [e.predict([im]) for im in decoded], "estimate", ()),  # type: ignore[attr-defined]
            (
                "Segmentation",
                Segmentation.bind(segmentation),  # type: ignore[attr-defined]
                lambda e: [e.segment(im, [], [(20.0, 20.0, 200.0, 200.0)]) for im in decoded],
                "segment",
                ((), [(20.0, 20.0, 200.0, 200.0)]),
            ),
        ):
            library_engine = DPTEngine(depth) if name == "Depth" else SamEngine(segmentation)
            library = rate(lambda e=library_engine, f=engine_run: f(e), len(decoded), args.repeats)
            handle = serve.run(deployment, name=f"bench-{name.lower()}", route_prefix=None)
            served = rate(
                serve_concurrent(handle, method, [(data, "image/jpeg", *call) for data in encoded]),
                len(encoded),
                args.repeats,
            )
            rows += [(name, "library (baseline)", library, 1.0), (name, "Serve, concurrent", served, served / library)]
            serve.delete(f"bench-{name.lower()}")

        # ----- image generation: a few images, library versus the streaming deployment
        count = max(2, args.images // 8)
        generator = DiffusersEngine(image_gen)
        request = ImageRequest(
            prompt="a lighthouse",
            steps=image_gen.default_steps,
            seed=1,
            width=image_gen.default_size,
            height=image_gen.default_size,
            guidance_scale=image_gen.guidance_scale,
        )
        library = rate(lambda: [generator.generate(request, lambda s, t: None) for _ in range(count)], count, 1)
        handle = serve.run(ImageGen.bind(image_gen), name="bench-imagegen", route_prefix=None)  # type: ignore[attr-defined]

        async def drain() -> None:
            async def one() -> None:
                async for _ in streaming(handle.options(stream=True).generate.remote("a lighthouse", seed=1)):
                    pass

            await asyncio.gather(*(one() for _ in range(count)))

        served = rate(lambda: asyncio.run(drain()), count, 1)
        rows += [
            ("ImageGen", "library (baseline)", library, 1.0),
            ("ImageGen", "Serve, streamed", served, served / library),
        ]
    finally:
        serve.shutdown()
        ray.shutdown()

    table = Table(title=f"Vision throughput: {args.images} images of 320x240, median of {args.repeats} runs")
    for column in ("deployment", "path", "images/s", "x baseline"):
        table.add_column(column, justify="left" if column in ("deployment", "path") else "right")
    for deployment, path, value, ratio in rows:
        table.add_row(deployment, path, f"{value:.1f}", f"{ratio:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
