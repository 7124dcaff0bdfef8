"""The deployments the gRPC ingress reaches, as one typed object bound by keyword in the composition root.

graphs/app.py fills it with the profile's deployments (`Handles(router=..., llm=..., stt=...)`); Serve replaces
each bound application with its `DeploymentHandle` in the ingress replica. A field left None is a family this
profile does not deploy: the RPCs that need it answer UNIMPLEMENTED, naming the config key that turns it on.
Adding a model family adds its field here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator


@dataclass(frozen=True)
class Handles:
    # the conversation's own path
    router: DeploymentHandle | None = None
    graph_rag: DeploymentHandle | None = None  # also answers the Knowledge service
    llm: DeploymentHandle | None = None  # also writes lyrics for GenerateMusic
    embeddings: DeploymentHandle | None = None
    # vision
    detection: DeploymentHandle | None = None
    depth: DeploymentHandle | None = None
    segmentation: DeploymentHandle | None = None
    gestures: DeploymentHandle | None = None
    scene_changes: DeploymentHandle | None = None
    image_gen: DeploymentHandle | None = None
    # speech
    stt: DeploymentHandle | None = None
    vad: DeploymentHandle | None = None
    diarization: DeploymentHandle | None = None
    voice_emotion: DeploymentHandle | None = None
    tts: DeploymentHandle | None = None
    # audio
    separation: DeploymentHandle | None = None
    music_analysis: DeploymentHandle | None = None
    music_gen: DeploymentHandle | None = None


def streaming(response: DeploymentResponse[Any] | DeploymentResponseGenerator[Any]) -> DeploymentResponseGenerator[Any]:
    """A streaming call's response, `handle.options(stream=True).method.remote(...)`, typed as what it is: Ray types
    every `.remote()` as either response, and `stream=True` makes it the generator (iterated as it comes)."""
    return cast(DeploymentResponseGenerator[Any], response)
