"""`almquist detect | depth | draw`: the vision families through the Media gRPC service of a running deployment.

In: an image file (or a prompt) and options. Out: a table on the terminal, and files where asked (a depth map as
a grey PNG, a drawing as PNG). Errors print the gRPC status and its message and exit 2.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from almquist.client import DEFAULT_TARGET, Client, image_frame
from almquist.v1 import media_pb2

console = Console(stderr=True)
out = Console()


def _rpc_error(error: grpc.RpcError) -> int:
    console.print(f"[red]{error.code().name}[/]: {error.details()}")  # type: ignore[attr-defined]
    return 2


def cmd_detect(args: argparse.Namespace) -> int:
    with Client(args.target) as client:
        try:
            response = client.detect(image_frame(args.image), args.queries, args.threshold)
        except grpc.RpcError as error:
            return _rpc_error(error)
    table = Table(title=f"{len(response.detections)} detections in {args.image}")
    for column in ("label", "score", "x_min", "y_min", "x_max", "y_max"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for d in response.detections:
        b = d.box
        table.add_row(d.label, f"{d.score:.3f}", *(f"{v:.0f}" for v in (b.x_min, b.y_min, b.x_max, b.y_max)))
    out.print(table)
    return 0


def depth_png(response: media_pb2.DepthResponse) -> bytes:
    """The depth map as an 8-bit grey PNG, nearest white (the map is relative inverse depth)."""
    from PIL import Image

    depth = np.frombuffer(response.depth_f16, dtype="<f2").astype(np.float32).reshape(response.height, response.width)
    span = float(depth.max() - depth.min()) or 1.0
    grey = ((depth - depth.min()) / span * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def cmd_depth(args: argparse.Namespace) -> int:
    with Client(args.target) as client:
        try:
            response = client.estimate_depth(image_frame(args.image))
        except grpc.RpcError as error:
            return _rpc_error(error)
    depth = np.frombuffer(response.depth_f16, dtype="<f2").astype(np.float32)
    target = args.out or Path(args.image).with_suffix(".depth.png")
    target.write_bytes(depth_png(response))
    out.print(
        f"depth map {response.width}x{response.height} (relative inverse depth: larger is nearer), "
        f"min {depth.min():.3f}, median {np.median(depth):.3f}, max {depth.max():.3f} -> {target}"
    )
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    request = media_pb2.GenerateImageRequest(
        prompt=args.prompt,
        negative_prompt=args.negative,
        steps=args.steps,
        seed=args.seed,
        width=args.width,
        height=args.height,
    )
    if args.init:
        request.init_image.CopyFrom(image_frame(str(args.init)))
    result = None
    columns = (TextColumn("drawing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Client(args.target) as client, Progress(*columns, console=console) as progress:
        task = progress.add_task("draw", total=None)
        try:
            for event in client.generate_image(request):
                progress.update(task, completed=event.step, total=event.total_steps or None)
                if event.HasField("result"):
                    result = event.result
        except grpc.RpcError as error:
            return _rpc_error(error)
    if result is None:
        console.print("[red]the server ended the stream without an image[/]")
        return 1
    args.out.write_bytes(result.data)
    facts = ", ".join(f"{k} {v}" for k, v in sorted(result.metadata.items()))
    out.print(f"{args.out} ({facts})")
    return 0


def _image_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no image file at {text}")
    return text


def add_media_commands(sub: argparse._SubParsersAction) -> None:
    """Adds detect, depth and draw to the `almquist` parser."""
    target = os.environ.get("ALMQUIST_TARGET", DEFAULT_TARGET)

    detect = sub.add_parser("detect", help='zero-shot detection: almquist detect IMAGE "a cat" "a dog"')
    detect.add_argument("image", type=_image_file)
    detect.add_argument("queries", nargs="+", help="what to look for")
    detect.add_argument("--threshold", type=float, default=0.0, help="minimum score (0: the server's default)")
    detect.add_argument("--target", default=target)
    detect.set_defaults(func=cmd_detect)

    depth = sub.add_parser("depth", help="monocular depth: writes IMAGE.depth.png (nearest white)")
    depth.add_argument("image", type=_image_file)
    depth.add_argument("--out", type=Path, default=None)
    depth.add_argument("--target", default=target)
    depth.set_defaults(func=cmd_depth)

    draw = sub.add_parser("draw", help='image generation with progress: almquist draw "a castle on a hill"')
    draw.add_argument("prompt")
    draw.add_argument("--out", type=Path, default=Path("drawing.png"))
    draw.add_argument("--negative", default="", help="what to avoid")
    draw.add_argument("--steps", type=int, default=0, help="denoising steps (0: the server's default)")
    draw.add_argument("--seed", type=int, default=0, help="0: random (the seed used is printed)")
    draw.add_argument("--width", type=int, default=0)
    draw.add_argument("--height", type=int, default=0)
    draw.add_argument("--init", type=_image_file, default=None, help="an image to redraw (image-to-image)")
    draw.add_argument("--target", default=target)
    draw.set_defaults(func=cmd_draw)
