"""The public API contract: the protos compile with grpcio-tools, and every message field, enum value and RPC is
documented (a comment is part of the contract for UE, web and notebook clients)."""

from __future__ import annotations

from importlib import resources

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from protos.build import PROTO_ROOT, build, proto_files


def descriptor_set(tmp_path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "api.pb"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{resources.files('grpc_tools') / '_proto'}",
        f"--descriptor_set_out={out}",
        "--include_source_info",
        *[str(p) for p in proto_files()],
    ]
    assert protoc.main(args) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def test_every_field_rpc_and_message_is_commented(tmp_path):
    undocumented = []
    for file in descriptor_set(tmp_path).file:
        comments = {
            tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip()
            for loc in file.source_code_info.location
        }
        for m, message in enumerate(file.message_type):
            if not comments.get((4, m)):
                undocumented.append(f"{file.name}: message {message.name}")
            for f, field in enumerate(message.field):
                if not comments.get((4, m, 2, f)):
                    undocumented.append(f"{file.name}: {message.name}.{field.name}")
        for s, service in enumerate(file.service):
            for r, method in enumerate(service.method):
                if not comments.get((6, s, 2, r)):
                    undocumented.append(f"{file.name}: rpc {service.name}.{method.name}")
    assert undocumented == []


def test_api_shape():
    build()
    from almquist.v1 import conversation_pb2, conversation_pb2_grpc

    service = conversation_pb2.DESCRIPTOR.services_by_name["Conversation"]
    converse = service.methods_by_name["Converse"]
    assert converse.client_streaming and converse.server_streaming
    ask = service.methods_by_name["Ask"]
    assert not ask.client_streaming and not ask.server_streaming
    assert hasattr(conversation_pb2_grpc, "add_ConversationServicer_to_server")
    client_events = {f.name for f in conversation_pb2.ClientEvent.DESCRIPTOR.oneofs_by_name["event"].fields}
    assert client_events == {"start", "text", "audio", "image", "end_of_turn", "interrupt"}
    server_events = {f.name for f in conversation_pb2.ServerEvent.DESCRIPTOR.oneofs_by_name["event"].fields}
    assert {"transcript", "token", "citation", "avatar", "turn_end", "error"} <= server_events


def test_avatar_header_carries_52_names_and_fps():
    from almquist.v1 import avatar_pb2

    header = avatar_pb2.AvatarHeader(blendshape_names=[f"b{i}" for i in range(52)], fps=60)
    event = avatar_pb2.AvatarEvent.FromString(avatar_pb2.AvatarEvent(time_s=0, header=header).SerializeToString())
    assert len(event.header.blendshape_names) == 52 and event.header.fps == 60
    assert len(avatar_pb2.VisemeId.keys()) == 15
