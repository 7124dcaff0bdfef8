"""Typed configuration of the Almquist applications (the `args:` of each app in `serve_config/*.yaml`).

One strict base (`base.Strict`) and one module per area: `models` (model references, data and cache folders), `llm`,
`embeddings`, `router`, `conversation`, `knowledge` (stores, KGQA, news), `vision`, `speech`, `audio`, `avatar`, and
`app` (`AppConfig`, the whole graph). The modules import only `base`, `models` and each other downwards (`app` last);
every public name is re-exported here, so `from almquist.config import AppConfig` works.
"""

from almquist.config.app import AppConfig
from almquist.config.audio import (
    AudioConfig,
    AudioLimits,
    MusicAnalysisConfig,
    MusicGenConfig,
    SeparationConfig,
)
from almquist.config.avatar import SCENES, AvatarConfig
from almquist.config.base import Strict
from almquist.config.conversation import DEFAULT_PERSONALITIES, ConversationConfig
from almquist.config.embeddings import EmbeddingsConfig
from almquist.config.knowledge import (
    DEFAULT_HALF_LIVES_HOURS,
    GraphStoreConfig,
    KGQAConfig,
    KnowledgeConfig,
    NewsConfig,
    VectorStoreConfig,
)
from almquist.config.llm import LLMConfig, VLLMOptions
from almquist.config.models import PKG_SCHEME, data_dir, default_cache_dir, model_name, resolve_model_ref
from almquist.config.router import DEFAULT_INTENT_EXAMPLES, DEFAULT_TOPIC_EXAMPLES, RouterConfig
from almquist.config.security import ROLES, AuthConfig, JWTConfig, QuotaConfig, StateConfig
from almquist.config.speech import (
    DiarizationConfig,
    SpeechConfig,
    STTConfig,
    TTSConfig,
    VADConfig,
    VoiceEmotionConfig,
)
from almquist.config.vision import (
    DepthConfig,
    DetectionConfig,
    GesturesConfig,
    ImageGenConfig,
    ImageLimits,
    SceneChangesConfig,
    SegmentationConfig,
    VisionConfig,
)

__all__ = [
    "DEFAULT_HALF_LIVES_HOURS",
    "DEFAULT_INTENT_EXAMPLES",
    "DEFAULT_PERSONALITIES",
    "DEFAULT_TOPIC_EXAMPLES",
    "PKG_SCHEME",
    "ROLES",
    "SCENES",
    "AppConfig",
    "AudioConfig",
    "AudioLimits",
    "AuthConfig",
    "AvatarConfig",
    "ConversationConfig",
    "DepthConfig",
    "DetectionConfig",
    "DiarizationConfig",
    "EmbeddingsConfig",
    "GesturesConfig",
    "GraphStoreConfig",
    "ImageGenConfig",
    "ImageLimits",
    "JWTConfig",
    "KGQAConfig",
    "KnowledgeConfig",
    "LLMConfig",
    "MusicAnalysisConfig",
    "MusicGenConfig",
    "NewsConfig",
    "QuotaConfig",
    "RouterConfig",
    "STTConfig",
    "SceneChangesConfig",
    "SegmentationConfig",
    "SeparationConfig",
    "SpeechConfig",
    "StateConfig",
    "Strict",
    "TTSConfig",
    "VADConfig",
    "VLLMOptions",
    "VectorStoreConfig",
    "VisionConfig",
    "VoiceEmotionConfig",
    "data_dir",
    "default_cache_dir",
    "model_name",
    "resolve_model_ref",
]
