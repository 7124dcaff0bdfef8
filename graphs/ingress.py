"""Serve's single gRPC ingress: the Conversation, Knowledge, Media and Account services (and the standard gRPC
Health service), composed explicitly, every RPC behind graphs/access.py (credential, role, quota).

A Serve application has one ingress deployment, and Serve's gRPC proxy calls the ingress's method named like the
RPC. So the ingress holds one object per gRPC service (graphs/conversation.py, graphs/knowledge.py,
graphs/media.py, graphs/health.py), each built from what it depends on, and exposes every RPC of every service as
its own method: the method names come from the proto descriptors, so an RPC added to a proto without its
implementation fails at start-up, and two services cannot both claim a method name (the proxy routes by name alone).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from ray import serve

from actors.sessions import get_session_store
from almquist.config import AppConfig
from almquist.v1 import account_pb2, conversation_pb2, knowledge_pb2, media_pb2
from graphs.access import Access
from graphs.account import AccountService
from graphs.conversation import ConversationService
from graphs.handles import Handles
from graphs.health import HealthService, application_serving
from graphs.knowledge import KnowledgeService
from graphs.media import MediaService

SERVICES: tuple[ServiceDescriptor, ...] = (
    conversation_pb2.DESCRIPTOR.services_by_name["Conversation"],
    knowledge_pb2.DESCRIPTOR.services_by_name["Knowledge"],
    media_pb2.DESCRIPTOR.services_by_name["Media"],
    account_pb2.DESCRIPTOR.services_by_name["Account"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],  # grpc.health.v1: Check, Watch, List
)


def service_names() -> list[str]:
    """The full names of SERVICES (the ingress's class, pickled by value, cannot hold the descriptors)."""
    return [descriptor.full_name for descriptor in SERVICES]


def rpc_methods(services: dict[str, Any], access: Access | None = None) -> dict[str, Any]:
    """RPC name -> the bound method that serves it, for `services` (a proto service's full name -> its object),
    behind `access` when given."""
    methods: dict[str, Any] = {}
    for descriptor in SERVICES:
        service = services[descriptor.full_name]
        for method in descriptor.methods:
            if method.name in methods:
                raise TypeError(f"two gRPC services define {method.name}: the proxy could not tell them apart")
            implementation = getattr(service, method.name, None)
            if implementation is None:
                raise TypeError(f"{type(service).__name__} does not implement {descriptor.full_name}.{method.name}")
            if access is not None:
                implementation = access.guard(method.name, implementation, method.server_streaming)
            methods[method.name] = implementation
    return methods


@serve.deployment(name="ConversationIngress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
class ConversationIngress:
    """In: every RPC of `almquist.v1.Conversation`, `.Knowledge`, `.Media`, `.Account` and of
    `grpc.health.v1.Health`, from Serve's gRPC proxy (or a handle). Out: what the service that owns the RPC answers,
    once graphs/access.py admitted the caller."""

    def __init__(self, handles: Handles, config: AppConfig | dict[str, Any] | None = None) -> None:
        app_config = AppConfig.model_validate(config or {})
        sessions = get_session_store(app_config.state)
        access = Access(sessions, app_config.auth, app_config.quotas)
        self._services = {
            "almquist.v1.Conversation": ConversationService(handles, app_config, sessions, access),
            "almquist.v1.Knowledge": KnowledgeService(handles.graph_rag),
            "almquist.v1.Media": MediaService(handles, app_config.speech, app_config.audio),
            "almquist.v1.Account": AccountService(sessions),
            # SERVING while every deployment of this replica's application has a running replica
            "grpc.health.v1.Health": HealthService(service_names(), application_serving()),
        }
        # Bound on the instance: Serve looks the RPC's method up by name on the replica's object, so the call goes
        # to the service's method through one guard (graphs/access.py) and nothing else.
        for name, method in rpc_methods(self._services, access).items():
            setattr(self, name, method)
