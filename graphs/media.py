"""The `almquist.v1.Media` gRPC service: direct access to each model family, for tools, notebooks and the CLI.

In: Media requests (EmbedRequest, DetectRequest, ...). Out: their responses, built from the deployments' plain
results. Served by the conversation application's ingress (a Serve app has one gRPC ingress), which mixes
`MediaService` in and holds a `MediaHandles`. A family this profile does not deploy answers UNIMPLEMENTED
naming the config key that turns it on; a deployment's AlmquistError becomes the RPC's status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from almquist.errors import InvalidArgument, Unimplemented, as_almquist_error
from almquist.v1 import common_pb2, media_pb2
from graphs.rpc import abort, call_or_abort

_MODES = {
    media_pb2.IMAGE_GEN_MODE_UNSPECIFIED: "",
    media_pb2.IMAGE_GEN_MODE_TEXT_TO_IMAGE: "text_to_image",
    media_pb2.IMAGE_GEN_MODE_IMAGE_TO_IMAGE: "image_to_image",
    media_pb2.IMAGE_GEN_MODE_INSTRUCT_EDIT: "instruct_edit",
    media_pb2.IMAGE_GEN_MODE_UPSCALE: "upscale",
}


@dataclass(frozen=True)
class MediaHandles:
    """The model deployments the Media service reaches; None: not deployed on this profile."""

    embeddings: DeploymentHandle | None = None
    detection: DeploymentHandle | None = None
    depth: DeploymentHandle | None = None
    segmentation: DeploymentHandle | None = None
    gestures: DeploymentHandle | None = None
    scene_changes: DeploymentHandle | None = None
    image_gen: DeploymentHandle | None = None


def _image(frame: common_pb2.ImageFrame) -> tuple[bytes, str]:
    return frame.data, frame.mime_type


def _box(box: Any) -> media_pb2.Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    return media_pb2.Box(x_min=x0, y_min=y0, x_max=x1, y_max=y1)


def _box_tuple(box: media_pb2.Box) -> tuple[float, float, float, float]:
    return (box.x_min, box.y_min, box.x_max, box.y_max)


class MediaService:
    """gRPC methods of `almquist.v1.Media`; the class that mixes this in sets `self._media`."""

    _media: MediaHandles
    _embedding_model: str | None = None

    def _handle(self, grpc_context: Any, family: str, config_key: str) -> DeploymentHandle:
        handle = getattr(self._media, family)
        if handle is None:
            abort(grpc_context, Unimplemented(f"{family} is not deployed here: configure {config_key} in the profile"))
        return handle

    async def Embed(self, request: media_pb2.EmbedRequest, grpc_context: Any = None) -> media_pb2.EmbedResponse:
        handle = self._handle(grpc_context, "embeddings", "embeddings")
        vectors = np.asarray(
            await call_or_abort(grpc_context, handle.embed.remote(list(request.texts), request.normalize))
        )
        if self._embedding_model is None:  # asked once: a replica serves one model for its life
            self._embedding_model = str((await handle.info.remote())["model"])
        return media_pb2.EmbedResponse(
            embeddings=[media_pb2.Embedding(values=row.tolist()) for row in vectors],
            model=self._embedding_model,
            dimensions=int(vectors.shape[1]),
        )

    async def Detect(self, request: media_pb2.DetectRequest, grpc_context: Any = None) -> media_pb2.DetectResponse:
        handle = self._handle(grpc_context, "detection", "vision.detection")
        found = await call_or_abort(
            grpc_context,
            handle.detect.remote(*_image(request.image), list(request.queries), request.score_threshold),
        )
        return media_pb2.DetectResponse(
            detections=[media_pb2.Detection(label=d.label, score=d.score, box=_box(d.box)) for d in found]
        )

    async def EstimateDepth(self, request: media_pb2.DepthRequest, grpc_context: Any = None) -> media_pb2.DepthResponse:
        handle = self._handle(grpc_context, "depth", "vision.depth")
        boxes = [_box_tuple(box) for box in request.boxes]
        result = await call_or_abort(grpc_context, handle.estimate.remote(*_image(request.image), boxes))
        return media_pb2.DepthResponse(
            depth_f16=np.asarray(result.depth, dtype="<f2").tobytes(),
            width=result.width,
            height=result.height,
            box_median_depth=list(result.box_median_depth),
        )

    async def Segment(self, request: media_pb2.SegmentRequest, grpc_context: Any = None) -> media_pb2.SegmentResponse:
        from deployments.segmentation import mask_png

        handle = self._handle(grpc_context, "segmentation", "vision.segmentation")
        points = [(p.x, p.y, p.foreground) for p in request.points]
        boxes = [_box_tuple(box) for box in request.boxes]
        masks = await call_or_abort(grpc_context, handle.segment.remote(*_image(request.image), points, boxes))
        return media_pb2.SegmentResponse(
            masks=[
                media_pb2.Mask(png=mask_png(m.mask), score=m.score, box=_box(m.box), area=int(m.area)) for m in masks
            ]
        )

    async def RecognizeGestures(
        self, request: media_pb2.GesturesRequest, grpc_context: Any = None
    ) -> media_pb2.GesturesResponse:
        handle = self._handle(grpc_context, "gestures", "vision.gestures")
        hands = await call_or_abort(grpc_context, handle.recognize.remote(*_image(request.image)))
        return media_pb2.GesturesResponse(
            hands=[
                media_pb2.HandGesture(
                    gesture=h.gesture,
                    score=h.score,
                    handedness=h.handedness,
                    landmarks=[media_pb2.Landmark(x=x, y=y, z=z) for x, y, z in np.asarray(h.landmarks).tolist()],
                )
                for h in hands
            ]
        )

    async def DetectSceneChanges(
        self, request: media_pb2.SceneChangesRequest, grpc_context: Any = None
    ) -> media_pb2.SceneChangesResponse:
        handle = self._handle(grpc_context, "scene_changes", "vision.scene_changes")
        frames = [(f.data, f.mime_type, f.timestamp_s) for f in request.frames]
        cuts = await call_or_abort(grpc_context, handle.detect.remote(frames, request.threshold))
        return media_pb2.SceneChangesResponse(
            cuts=[
                media_pb2.SceneCut(frame_index=c.frame_index, timestamp_s=c.timestamp_s, score=c.score) for c in cuts
            ],
            frames=len(frames),
        )

    async def GenerateImage(
        self, request: media_pb2.GenerateImageRequest, grpc_context: Any = None
    ) -> AsyncIterator[media_pb2.MediaProgress]:
        from deployments.image_gen import ImageOutput, ImageProgress

        handle = self._handle(grpc_context, "image_gen", "vision.image_gen")
        if request.mode not in _MODES:
            abort(grpc_context, InvalidArgument(f"unknown mode {request.mode}; use one of ImageGenMode's values"))
        stream = handle.options(stream=True).generate.remote(
            request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            seed=request.seed,
            width=request.width,
            height=request.height,
            mode=_MODES[request.mode],
            init_image=_image(request.init_image) if request.HasField("init_image") else None,
            strength=request.strength,
            guidance_scale=request.guidance_scale,
            control_image=_image(request.control_image) if request.HasField("control_image") else None,
            loras=tuple(request.loras),
        )
        total = 0
        try:
            async for item in stream:
                if isinstance(item, ImageProgress):
                    total = item.total_steps
                    yield media_pb2.MediaProgress(step=item.step, total_steps=item.total_steps)
                elif isinstance(item, ImageOutput):
                    yield media_pb2.MediaProgress(
                        step=total or item.steps,
                        total_steps=total or item.steps,
                        result=media_pb2.MediaResult(
                            kind="image",
                            mime_type="image/png",
                            data=item.png,
                            description=request.prompt,
                            metadata={
                                "seed": str(item.seed),
                                "steps": str(item.steps),
                                "size": f"{item.width}x{item.height}",
                                "mode": item.mode,
                                "model": item.model,
                            },
                        ),
                    )
        except Exception as error:
            ours = as_almquist_error(error)
            if ours is None:
                raise
            abort(grpc_context, ours)  # a stream: errors arrive while iterating, not from one awaited call

    async def Transcribe(self, request_stream: Any, grpc_context: Any = None) -> AsyncIterator[media_pb2.Transcript]:
        abort(grpc_context, Unimplemented("speech recognition is not deployed yet (the speech issue brings it)"))
        yield media_pb2.Transcript()  # pragma: no cover - makes this an async generator like the real method

    async def Synthesize(
        self, request: media_pb2.SynthesizeRequest, grpc_context: Any = None
    ) -> AsyncIterator[media_pb2.SynthesizeChunk]:
        abort(grpc_context, Unimplemented("speech synthesis is not deployed yet (the speech issue brings it)"))
        yield media_pb2.SynthesizeChunk()  # pragma: no cover

    async def GenerateMusic(
        self, request: media_pb2.GenerateMusicRequest, grpc_context: Any = None
    ) -> AsyncIterator[media_pb2.MediaProgress]:
        abort(grpc_context, Unimplemented("music generation is not deployed yet (the audio issue brings it)"))
        yield media_pb2.MediaProgress()  # pragma: no cover

    async def Separate(
        self, request: media_pb2.SeparateRequest, grpc_context: Any = None
    ) -> AsyncIterator[media_pb2.MediaResult]:
        abort(grpc_context, Unimplemented("source separation is not deployed yet (the audio issue brings it)"))
        yield media_pb2.MediaResult()  # pragma: no cover
