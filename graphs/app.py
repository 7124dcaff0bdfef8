"""The composition root: the conversation application, every deployment bound by keyword.

`build_app` is the profiles' `import_path` (`graphs.app:build_app`); `compose` builds the same graph from code
(tests, benchmarks) with engines swapped. The graph: ingress -> router -> {llm, graph_rag -> llm, scene describer,
image_gen}, with embeddings for both, and the vision, speech and audio families the profile configures (the
ingress holds the speech families, since it hears spoken turns; all of them serve `Media`).

Adding a model family touches its deployment module, its config, one line in `FAMILIES` below, its field in
`Handles`, its RPC and the profile.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from almquist.config import AppConfig
from deployments.depth import Depth
from deployments.detection import Detector
from deployments.diarization import Diarization
from deployments.embeddings import Embeddings
from deployments.gestures import Gestures
from deployments.image_gen import ImageGen
from deployments.llm.server import LLMServer
from deployments.music_analysis import MusicAnalysis
from deployments.music_gen import MusicGen
from deployments.scene_changes import SceneChanges
from deployments.segmentation import Segmentation
from deployments.separation import Separation
from deployments.stt import SpeechToText
from deployments.tts import TextToSpeech
from deployments.vad import VoiceActivity
from deployments.voice_emotion import VoiceEmotion
from graphs.graph_rag import GraphRAG
from graphs.handles import Handles
from graphs.ingress import ConversationIngress
from graphs.router import Router
from graphs.vision import SceneDescriber

# Handles field -> (its deployment, where its config lives in AppConfig): deployed when that config is set.
FAMILIES: dict[str, tuple[Any, tuple[str, str]]] = {
    "detection": (Detector, ("vision", "detection")),
    "depth": (Depth, ("vision", "depth")),
    "segmentation": (Segmentation, ("vision", "segmentation")),
    "gestures": (Gestures, ("vision", "gestures")),
    "scene_changes": (SceneChanges, ("vision", "scene_changes")),
    "image_gen": (ImageGen, ("vision", "image_gen")),
    "stt": (SpeechToText, ("speech", "stt")),
    "vad": (VoiceActivity, ("speech", "vad")),
    "diarization": (Diarization, ("speech", "diarization")),
    "voice_emotion": (VoiceEmotion, ("speech", "voice_emotion")),
    "tts": (TextToSpeech, ("speech", "tts")),
    "separation": (Separation, ("audio", "separation")),
    "music_analysis": (MusicAnalysis, ("audio", "music_analysis")),
    "music_gen": (MusicGen, ("audio", "music_gen")),
}


def compose(
    config: AppConfig,
    llm_engine_cls: str | type | None = None,
    embeddings_engine_cls: type | None = None,
    vision_engines: dict[str, type] | None = None,
    ray_actor_options: dict[str, dict[str, Any]] | None = None,
    audio_engines: dict[str, type] | None = None,
) -> Application:
    """The conversation graph for `config`. `vision_engines` / `audio_engines` (Handles field -> engine class) swap
    those families' engines; `ray_actor_options` (deployment name -> options) replaces the decorators' defaults,
    for graphs run from code (a Serve config's `deployments:` does the same for profiles)."""
    engines = {**(vision_engines or {}), **(audio_engines or {})}
    options = ray_actor_options or {}

    def placed(deployment: Any) -> Any:
        name = deployment.name
        return deployment.options(ray_actor_options=options[name]) if name in options else deployment

    embeddings = placed(Embeddings).bind(config=config.embeddings, engine_cls=embeddings_engine_cls)
    llm = placed(LLMServer).bind(config=config.llm, engine_cls=llm_engine_cls)
    graph_rag = placed(GraphRAG).bind(
        llm=llm, embeddings=embeddings, knowledge=config.knowledge, kgqa=config.kgqa, news=config.news
    )
    # bound applications where Handles declares DeploymentHandles: Serve passes each to the ingress as its handle
    families: dict[str, Any] = {}
    for field, (deployment, (area, name)) in FAMILIES.items():
        family_config = getattr(getattr(config, area), name)
        if family_config is not None:
            families[field] = placed(deployment).bind(config=family_config, engine_cls=engines.get(field))
    scene = None
    if "detection" in families:
        scene = placed(SceneDescriber).bind(
            detection=families["detection"],
            llm=llm,
            detection_config=config.vision.detection,
            depth=families.get("depth"),
            segmentation=families.get("segmentation"),
        )
    router = placed(Router).bind(
        llm=llm,
        graph_rag=graph_rag,
        embeddings=embeddings,
        config=config.router,
        scene=scene,
        image_gen=families.get("image_gen"),
    )
    handles = Handles(router=router, graph_rag=graph_rag, llm=llm, embeddings=embeddings, **families)
    return placed(ConversationIngress).bind(handles=handles, config=config)


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (`import_path: graphs.app:build_app`); `args` is an AppConfig."""
    return compose(AppConfig.model_validate(args or {}))
