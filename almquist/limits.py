"""The largest message each RPC accepts: one table for every RPC of the public gRPC services, enforced at the door.

In: a method's full name (`/almquist.v1.Conversation/Ask`). Out: its `MessageLimit` (the largest serialized request
message, and for a client stream the most bytes of messages one stream may send). Used by Serve's gRPC proxy through
`almquist.proxy_guard` (before a message is parsed or sent on to a replica) and by the tests.

Two layers, because Ray Serve's gRPC proxy (ray/serve/_private/grpc_util.py) has no per-method receive limit:
- the proxy's gRPC server refuses any message larger than `RAY_SERVE_GRPC_MAX_MESSAGE_SIZE` (read by Ray when the
  proxy starts; 2 GiB unless set) while reading its length prefix, before buffering it: set it to `GLOBAL_MAX_BYTES`
  (`PROXY_ENV`) wherever Ray starts, so no message larger than the largest RPC's limit is ever held whole;
- `almquist.proxy_guard` checks each message's own limit on its raw bytes, before parsing it and before the proxy
  sends it to the ingress (one length comparison, no copy).
Both answer RESOURCE_EXHAUSTED, as gRPC itself does for a message over its limit.

The limits follow what the application accepts once a message is read (almquist.config: ImageLimits 20 MB images,
AudioLimits 600 s clips, 4,000-character turns); where a config limit allows more than is sensible on the wire (8
channels of 96 kHz audio for 600 s would be 921 MB), the table is the stricter one and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB

# What the application's own checks accept (tests/test_limits.py keeps these equal to almquist.config's defaults).
IMAGE_BYTES = 20_000_000  # ImageLimits.max_bytes: an encoded camera photo or screenshot (a 40 MP JPEG is ~10-20 MB)
ENVELOPE = 64 * KiB  # room for a message's other fields beside its image or audio (prompts, queries, boxes, ids)


@dataclass(frozen=True)
class MessageLimit:
    """How large one RPC's request messages may be, and why."""

    max_bytes: int  # one serialized request message
    why: str
    max_stream_bytes: int | None = None  # a client stream: all its messages together (None: no total)

    def describe(self) -> str:
        return human_bytes(self.max_bytes)


def human_bytes(n: int) -> str:
    """1 KiB, 64 KiB, 20 MiB, 19.1 MiB: how a limit is named in messages."""
    for unit, size in (("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


_TEXT = MessageLimit(
    64 * KiB,
    "a typed turn or question: 4,000 characters (conversation.max_text_chars) are at most 16 KB of UTF-8; "
    "64 KiB leaves room for a larger configured limit and the request's ids",
)
_SMALL = MessageLimit(
    16 * KiB, "ids, names, a label and a few numbers: a few hundred bytes; 16 KiB bounds lists of relation types"
)
_EMPTY = MessageLimit(1 * KiB, "an empty (or nearly empty) request")
_IMAGE = MessageLimit(
    IMAGE_BYTES + ENVELOPE,
    "one image up to ImageLimits.max_bytes (20 MB: a 40-megapixel JPEG, or a PNG screenshot) plus queries, boxes "
    "or points (at most a few KB)",
)
_SPEECH_CLIP = MessageLimit(
    32 * MiB,
    "one speech clip as PCM16: 600 s (AudioLimits.max_seconds) of 16 kHz mono, what the speech models hear, is "
    "19.2 MB; higher rates and extra channels are wasted bytes here: resample first, or stream through Transcribe",
)
_MUSIC_CLIP = MessageLimit(
    128 * MiB,
    "one piece of music as PCM16 or an encoded file: 600 s (AudioLimits.max_seconds) of 48 kHz stereo is 115.2 MB; "
    "the former 200 MB file limit admitted nothing longer the 600 s check would not refuse anyway",
)

# The table: every RPC of every service the proxy serves (tests/test_limits.py checks it against the descriptors).
RPC_LIMITS: dict[str, MessageLimit] = {
    # almquist.v1.Conversation
    "/almquist.v1.Conversation/Ask": _TEXT,
    "/almquist.v1.Conversation/AskStream": _TEXT,
    "/almquist.v1.Conversation/Converse": MessageLimit(
        IMAGE_BYTES + ENVELOPE,
        "one ClientEvent: an ImageFrame (20 MB) with its question is the largest; microphone AudioChunks are 20-100 ms "
        "(a few KB). A stream is a whole session, so it has no byte total: each spoken turn ends at "
        "speech.stt.audio.max_seconds and typed turns queue at most conversation.max_pending_turns deep",
    ),
    # almquist.v1.Knowledge
    "/almquist.v1.Knowledge/Query": _TEXT,
    "/almquist.v1.Knowledge/Search": _TEXT,
    "/almquist.v1.Knowledge/ListSnapshots": _EMPTY,
    "/almquist.v1.Knowledge/Rollback": _SMALL,
    "/almquist.v1.Knowledge/Influential": _SMALL,
    "/almquist.v1.Knowledge/Community": _SMALL,
    "/almquist.v1.Knowledge/ShortestPath": _SMALL,
    # almquist.v1.Media
    "/almquist.v1.Media/Embed": MessageLimit(
        8 * MiB,
        "512 texts of 8,192 characters (embeddings.max_texts, max_chars) are 4 MiB of ASCII; 8 MiB leaves room for "
        "non-ASCII text (longer batches: split them)",
    ),
    "/almquist.v1.Media/Transcribe": MessageLimit(
        4 * MiB,
        "one TranscribeRequest carries a chunk of PCM16: the CLI sends 1 s (1.5 MB at the largest rate, 96 kHz x 8 "
        "channels; 192 KB at 48 kHz stereo). The stream is one turn: 128 MiB in all, 600 s (AudioLimits.max_seconds) "
        "of 48 kHz stereo being 115.2 MB",
        max_stream_bytes=128 * MiB,
    ),
    "/almquist.v1.Media/Synthesize": _TEXT,
    "/almquist.v1.Media/Detect": _IMAGE,
    "/almquist.v1.Media/EstimateDepth": _IMAGE,
    "/almquist.v1.Media/Segment": _IMAGE,
    "/almquist.v1.Media/RecognizeGestures": _IMAGE,
    "/almquist.v1.Media/DetectSceneChanges": MessageLimit(
        64 * MiB,
        "up to 3,000 frames (vision.scene_changes.max_frames) of a video: cut detection needs small frames (a 320-px "
        "JPEG is ~20 KB, 3,000 of them 60 MB); send longer videos in several requests",
    ),
    "/almquist.v1.Media/GenerateImage": MessageLimit(
        2 * IMAGE_BYTES + ENVELOPE,
        "an init image and a control image of up to 20 MB each, plus the prompts (2,000 characters each)",
    ),
    "/almquist.v1.Media/GenerateMusic": MessageLimit(
        16 * MiB,
        "a melody of up to 30 s (audio.music_gen.melody.max_seconds): 11.5 MB at 96 kHz stereo PCM16, and a prompt",
    ),
    "/almquist.v1.Media/Separate": _MUSIC_CLIP,
    "/almquist.v1.Media/DetectSpeech": _SPEECH_CLIP,
    "/almquist.v1.Media/Diarize": _SPEECH_CLIP,
    "/almquist.v1.Media/RecognizeVoiceEmotion": _SPEECH_CLIP,
    "/almquist.v1.Media/AnalyzeMusic": _MUSIC_CLIP,
    # almquist.v1.Account: who is calling, and their data
    "/almquist.v1.Account/WhoAmI": _EMPTY,
    "/almquist.v1.Account/ExportMyData": _EMPTY,
    "/almquist.v1.Account/DeleteMyData": _EMPTY,
    "/almquist.v1.Account/DeleteUser": _SMALL,
    # grpc.health.v1.Health: a service name
    "/grpc.health.v1.Health/Check": _EMPTY,
    "/grpc.health.v1.Health/Watch": _EMPTY,
    "/grpc.health.v1.Health/List": _EMPTY,
}

# A method the table does not name (a service added to grpc_servicer_functions without its rows): the text limit.
DEFAULT_LIMIT = MessageLimit(64 * KiB, "a method without its own row: the limit of a typed request")

# The proxy's global cap: the largest limit in the table (a stream's total is enforced per message as it arrives).
GLOBAL_MAX_BYTES = max(limit.max_bytes for limit in RPC_LIMITS.values())

# The environment wherever Ray starts (almquist up's `ray start`, ray_cluster.yaml, KubeRay, tests' ray.init): Ray
# Serve's proxy reads it at start-up for its server's grpc.max_receive_message_length (and max_send_message_length).
PROXY_ENV = {"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(GLOBAL_MAX_BYTES)}


def limit_for(method: str) -> MessageLimit:
    """The limit of a method given by its full name (`/package.Service/Method`)."""
    return RPC_LIMITS.get(method, DEFAULT_LIMIT)
