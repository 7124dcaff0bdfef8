"""Grounded scene description: an image turn in, an answer that names only what the detector found out.

In: a `Turn` whose `image` is set ("what do you see?", "is there a dog?"). Out: one `Citation` per detected
object (label, position, distance: what the answer rests on), then the answer's `TokenChunk`s.

The path: detection (the things the user names plus the configured scene vocabulary) -> depth (near, middle or
far per box) and segmentation (how much of the picture each object covers), when those are deployed -> a list of
facts -> the LLM, told to describe the picture from the facts alone. The LLM's answer is checked before it is
sent: if it names an object of the vocabulary that was not detected, or leaves a detected one out, the answer is
the facts in plain words instead. So answers are grounded in detections, whatever the model's size.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from ray import serve
from ray.serve.handle import DeploymentHandle

from almquist.config import DetectionConfig
from almquist.errors import FailedPrecondition
from almquist.images import open_image
from deployments.depth import describe_distance
from deployments.detection import Detection
from deployments.llm.engine import TokenChunk
from graphs.handles import streaming
from graphs.turn import Citation, Turn

_ARTICLE = re.compile(r"^(?:a photo of |an image of )?(?:a|an|the|some)\s+", re.IGNORECASE)
# things a user names in a visual question: "is there a dog", "do you see any cats", "find the red car"
_NAMED = re.compile(
    r"\b(?:is there|are there|do you see|can you see|is this|is that|find|spot|where is|where are|any)\s+"
    r"(?:a|an|the|any|some)?\s*([a-z]+)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SceneObject:
    """One detected object, placed in the picture."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    position: str  # "on the left", "in the middle", "on the right"
    distance: str  # "near", "middle", "far"; "" without a depth model
    area_share: float  # share of the picture it covers: its mask with segmentation, else its box


def object_name(query: str) -> str:
    """'a cat' -> 'cat': the name an answer uses for a detector query."""
    return _ARTICLE.sub("", query.strip()).strip().lower()


def queries_for(text: str, scene_queries: tuple[str, ...], limit: int) -> list[str]:
    """What to look for: things the user names first, then the scene vocabulary, at most `limit` queries."""
    named = [f"a {word.lower()}" for word in _NAMED.findall(text or "")]
    known = {object_name(q) for q in scene_queries}
    queries = [q for q in named if object_name(q) not in known and object_name(q) not in {"picture", "image", "photo"}]
    queries += list(scene_queries)
    return list(dict.fromkeys(queries))[:limit]


def horizontal_position(box: tuple[float, float, float, float], width: int) -> str:
    center = (box[0] + box[2]) / 2 / max(width, 1)
    if center < 1 / 3:
        return "on the left"
    if center > 2 / 3:
        return "on the right"
    return "in the middle"


def fact_line(obj: SceneObject) -> str:
    """One object as a fact for the LLM and a citation snippet."""
    parts = [obj.position]
    if obj.distance:
        parts.append({"near": "close to the camera", "far": "far from the camera"}.get(obj.distance, "midway back"))
    parts.append(f"covers {obj.area_share:.0%} of the picture")
    return f"{obj.label}: " + ", ".join(parts) + f" (detector score {obj.score:.2f})"


def _mention_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(name)}(?:s|es)?\b", re.IGNORECASE)


def mentioned(answer: str, vocabulary: set[str]) -> set[str]:
    """The vocabulary's object names an answer mentions (singular or plural)."""
    return {name for name in vocabulary if _mention_pattern(name).search(answer)}


def plain_description(objects: list[SceneObject]) -> str:
    """The facts in plain words: the answer when the LLM's is not grounded."""
    if not objects:
        return "I can't make out anything I know how to look for in this picture."
    phrases = []
    for obj in objects:
        where = obj.position
        if obj.distance == "near":
            where += ", close to the camera"
        elif obj.distance == "far":
            where += ", further away"
        phrases.append(f"a {obj.label} {where}")
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"I can see {listed}."


def is_grounded(answer: str, objects: list[SceneObject], vocabulary: set[str]) -> bool:
    """True when the answer names every detected object and no other object of the vocabulary."""
    detected = {obj.label for obj in objects}
    return bool(answer.strip()) and mentioned(answer, vocabulary | detected) == detected


def _word_chunks(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


@serve.deployment(name="SceneDescriber", ray_actor_options={"num_cpus": 0.1})
class SceneDescriber:
    """Composes the vision deployments and the LLM into a grounded answer; see the module docstring."""

    def __init__(
        self,
        detection: DeploymentHandle,
        llm: DeploymentHandle,
        detection_config: DetectionConfig | dict,
        depth: DeploymentHandle | None = None,
        segmentation: DeploymentHandle | None = None,
    ) -> None:
        self._detection = detection
        self._llm = llm
        self._config = DetectionConfig.model_validate(detection_config)
        self._depth = depth
        self._segmentation = segmentation

    async def look(self, turn: Turn) -> list[SceneObject]:
        """The objects in the turn's picture, placed left to right, with distance and size when available."""
        if turn.image is None:
            raise FailedPrecondition("this turn has no picture: send an ImageFrame with the question")
        image, mime = turn.image.data, turn.image.mime_type
        queries = queries_for(turn.text, self._config.scene_queries, self._config.max_queries)
        detections: list[Detection] = await self._detection.detect.remote(image, mime, queries, 0.0)
        best: dict[str, Detection] = {}
        for det in detections:  # one object per label: the answer talks about kinds of things
            name = object_name(det.label)
            if name not in best or det.score > best[name].score:
                best[name] = det
        chosen = list(best.values())
        boxes = [tuple(det.box) for det in chosen]
        depth_call = self._depth.estimate.remote(image, mime, boxes) if self._depth and boxes else None
        masks_call = self._segmentation.segment.remote(image, mime, (), boxes) if self._segmentation and boxes else None
        depth, masks = await asyncio.gather(_maybe(depth_call), _maybe(masks_call))
        width, height = open_image(image, mime, self._config.images).size  # header only: detection decoded it
        distances = describe_distance(depth.box_median_depth, depth.depth) if depth is not None else [""] * len(chosen)
        objects = []
        for i, det in enumerate(chosen):
            x0, y0, x1, y1 = (float(v) for v in det.box)
            area = masks[i].area if masks is not None else max(0.0, (x1 - x0) * (y1 - y0))
            objects.append(
                SceneObject(
                    label=object_name(det.label),
                    score=float(det.score),
                    box=(x0, y0, x1, y1),
                    position=horizontal_position((x0, y0, x1, y1), width),
                    distance=distances[i],
                    area_share=float(area) / max(width * height, 1),
                )
            )
        return sorted(objects, key=lambda obj: (obj.box[0] + obj.box[2]) / 2)

    async def describe(self, turn: Turn) -> AsyncIterator[Citation | TokenChunk]:
        objects = await self.look(turn)
        for i, obj in enumerate(objects):
            yield Citation(source_id=f"detection:{i}", title=obj.label, snippet=fact_line(obj), score=obj.score)
        facts = "\n".join(f"- {fact_line(obj)}" for obj in objects) or "- nothing recognisable"
        system = (
            f"{turn.system_prompt}\nThe user sent a picture. A detector found exactly these objects:\n{facts}\n"
            "Describe the picture in one or two sentences using only these objects and where they are. "
            "Do not mention any other object."
        )
        request = turn.generation_request(system_prompt=system)
        answer = ""
        finish: Literal["stop", "length"] = "stop"
        async for chunk in streaming(self._llm.options(stream=True).generate.remote(request)):
            answer += chunk.text
            finish = chunk.finish_reason or finish
        vocabulary = {object_name(q) for q in self._config.scene_queries}
        vocabulary |= {object_name(q) for q in queries_for(turn.text, (), self._config.max_queries)}
        if not is_grounded(answer, objects, vocabulary):
            answer, finish = plain_description(objects), "stop"
        chunks = _word_chunks(answer)
        for i, text in enumerate(chunks):
            # token ids are the LLM's own only when its answer is used; words of the plain answer carry -1
            yield TokenChunk(token_id=-1, text=text, index=i, finish_reason=finish if i == len(chunks) - 1 else None)


async def _maybe(call: Any) -> Any:
    """A handle call's result, or None when there was nothing to call."""
    return None if call is None else await call
