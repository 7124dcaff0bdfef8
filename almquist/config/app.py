"""Typed configuration of the whole composed graph: `AppConfig`, the `args:` of the `conversation` application in
`serve_config/*.yaml`, with one section per area (each defined in its own module of this package)."""

from __future__ import annotations

from pydantic import Field

from almquist.config.audio import AudioConfig
from almquist.config.avatar import AvatarConfig
from almquist.config.base import Strict
from almquist.config.conversation import ConversationConfig
from almquist.config.embeddings import EmbeddingsConfig
from almquist.config.knowledge import KGQAConfig, KnowledgeConfig, NewsConfig
from almquist.config.llm import LLMConfig
from almquist.config.router import RouterConfig
from almquist.config.security import AuthConfig, QuotaConfig, StateConfig
from almquist.config.speech import SpeechConfig
from almquist.config.vision import VisionConfig


class AppConfig(Strict):
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
    state: StateConfig = Field(default_factory=StateConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    quotas: QuotaConfig = Field(default_factory=QuotaConfig)
