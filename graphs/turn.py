"""What flows between the graphs' deployments for one user turn: plain dataclasses, pickled by handles.

The vocabulary, in one place (as Pipecat names its frames):

In, from the ingress (graphs/conversation.py) to the router (graphs/router.py):
  Turn            the user's text with everything the answerer needs from the session (+ ImageInput, a picture)
Out, the router's stream back to the ingress, in this order (`TurnEvent`):
  RouteDecision   always first: intent, route, confidence and topic         -> TurnStarted (and the avatar's scene)
  Citation        a fact the answer rests on, before the tokens that use it -> Citation
  MediaItem       an artefact made for the turn (a drawn image)              -> MediaResult
  TokenChunk      the answer's text as the model writes it (deployments/llm) -> AnswerToken (and the avatar's voice);
                  its `finish_reason` "length" ends the turn as MAX_TOKENS
The routes (graph-RAG, news, the scene describer, image generation) yield the same kinds after the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from deployments.llm.engine import ChatMessage, GenerationRequest, TokenChunk


@dataclass(frozen=True)
class ImageInput:
    """A picture that came with a turn: encoded bytes, as the client sent them (decoded by the model's replica)."""

    data: bytes
    mime_type: str = ""


@dataclass(frozen=True)
class Turn:
    """A user turn, ready to answer: the text plus everything the answerer needs from the session."""

    turn_id: str
    text: str
    system_prompt: str
    history: tuple[ChatMessage, ...] = ()
    modality: str = "text"
    max_tokens: int = 128
    image: ImageInput | None = None
    emotion: str = ""  # heard in the user's voice (deployments/voice_emotion); "" for typed turns

    def generation_request(self, system_prompt: str | None = None) -> GenerationRequest:
        system = system_prompt or self.system_prompt
        if self.emotion and self.emotion != "neutral":  # the answer's tone follows how the user sounds
            system += f"\nThe user sounds {self.emotion}; keep that in mind in how you answer."
        messages = (
            ChatMessage("system", system),
            *self.history,
            ChatMessage("user", self.text),
        )
        return GenerationRequest(messages=messages, max_tokens=self.max_tokens, request_id=self.turn_id)


@dataclass(frozen=True)
class RouteDecision:
    """The router's choice for a turn; the first item of every routed stream."""

    intent: str
    route: str
    confidence: float
    topic: str = "general"  # what the turn is about (RouterConfig.topic_examples); the avatar's scene follows it


@dataclass(frozen=True)
class Citation:
    """A fact an answer rests on, sent to the client before the answer's tokens."""

    source_id: str
    title: str
    snippet: str
    path: tuple[str, ...] = ()
    snapshot_id: str = ""
    score: float = 0.0
    published: float = 0.0  # epoch seconds of a news item or data point; 0: none (graph facts)
    url: str = ""  # where to read the source, when it has an address


@dataclass(frozen=True)
class MediaItem:
    """An artefact made for a turn (a generated image, ...), sent to the client as a MediaResult event."""

    kind: str
    mime_type: str
    data: bytes
    description: str = ""
    metadata: tuple[tuple[str, str], ...] = ()


TurnEvent: TypeAlias = RouteDecision | Citation | MediaItem | TokenChunk  # what a routed turn streams back

__all__ = ["Citation", "ImageInput", "MediaItem", "RouteDecision", "TokenChunk", "Turn", "TurnEvent"]
