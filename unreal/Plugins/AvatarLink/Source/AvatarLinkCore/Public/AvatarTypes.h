// Plain value types of the avatar stream (protos/almquist/v1/avatar.proto), free of protobuf and of Unreal, so the
// UE module and the tests share them. Every time is in seconds on the audio clock, which starts at 0 with the header.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "VisemeTables.generated.h"

namespace avatarlink {

// The avatar protocol version this core speaks (AvatarHeader.protocol_version).
inline constexpr uint32_t kProtocolVersion = 1;

// 52 ARKit weights, always in kArkitNames order (the decoder remaps a header that orders them differently).
using BlendshapeWeights = std::array<float, kNumBlendshapes>;

// AvatarHeader: the first avatar event of a stream.
struct StreamHeader {
  std::vector<std::string> blendshape_names;  // as the server sent them
  uint32_t fps = 0;
  uint32_t audio_sample_rate_hz = 0;
  uint32_t audio_channels = 0;
  std::string audio_encoding;
  uint32_t protocol_version = 0;
  double lead_s = 0.0;  // how far ahead of the clock the server sends: the least a jitter buffer holds
};

// AudioChunk of the avatar's voice, decoded from PCM16LE.
struct AudioBlock {
  std::vector<int16_t> samples;  // interleaved when channels > 1
  uint32_t sample_rate_hz = 0;
  uint32_t channels = 1;
  double start_s = 0.0;
  uint64_t sequence = 0;

  size_t SampleFrames() const { return channels == 0 ? 0 : samples.size() / channels; }
  double DurationS() const {
    return sample_rate_hz == 0 ? 0.0 : static_cast<double>(SampleFrames()) / static_cast<double>(sample_rate_hz);
  }
  double EndS() const { return start_s + DurationS(); }
};

// One face pose at time_s; also what interpolation returns for an arbitrary playout time.
struct FaceFrame {
  double time_s = 0.0;
  BlendshapeWeights weights{};
  float head_pitch_deg = 0.0f;  // positive looks down
  float head_yaw_deg = 0.0f;    // positive turns to the avatar's left
  float head_roll_deg = 0.0f;   // positive tilts to the avatar's left
};

// A mouth shape held over [start_s, start_s + duration_s); id indexes kVisemeNames / kVisemePoses.
struct VisemeEvent {
  int id = 0;
  double start_s = 0.0;
  double duration_s = 0.0;
  float weight = 1.0f;

  double EndS() const { return start_s + duration_s; }
};

// Enum values equal the proto's; a newer server may send values this core does not name (proto3 enums are open).
enum class EmotionKind : int32_t {
  kNeutral = 0,
  kJoy = 1,
  kSadness = 2,
  kAnger = 3,
  kFear = 4,
  kSurprise = 5,
  kDisgust = 6,
  kExcitement = 7,
};

struct EmotionCommand {
  EmotionKind kind = EmotionKind::kNeutral;
  float intensity = 0.0f;
  double blend_s = 0.0;
};

struct GestureCommand {
  std::string name;
  float intensity = 0.0f;
  double duration_s = 0.0;
};

enum class CameraShot : int32_t { kMedium = 0, kCloseUp = 1, kWide = 2 };

struct CameraCommand {
  CameraShot shot = CameraShot::kMedium;
  std::string reason;
  double transition_s = 0.0;  // 0 is a cut
};

enum class SceneKind : int32_t {
  kLibrary = 0,
  kMovieTheater = 1,
  kSportsArena = 2,
  kMusicStudio = 3,
  kOutdoorNature = 4,
};

struct EnvironmentCommand {
  SceneKind scene = SceneKind::kLibrary;
  std::string reason;
};

enum class TurnEndReason : int32_t {
  kUnspecified = 0,
  kCompleted = 1,
  kInterrupted = 2,
  kMaxTokens = 3,
  kFailed = 4,  // TURN_END_REASON_ERROR (not named kError: Windows headers define ERROR)
};

// The avatar's end of a turn: its audio and face stop at stop_s; anything buffered past it is dropped.
struct TurnEndEvent {
  TurnEndReason reason = TurnEndReason::kUnspecified;
  std::string detail;
  double stop_s = 0.0;
};

// Which member of AvatarStreamEvent holds the event.
enum class AvatarEventKind : int32_t {
  kNone = 0,
  kHeader,
  kAudio,
  kFace,
  kViseme,
  kEmotion,
  kGesture,
  kCamera,
  kEnvironment,
  kTurnEnd,
};

// One decoded AvatarEvent. Only the member named by kind is meaningful (a tagged struct rather than std::variant:
// no exceptions or RTTI needed to read it).
struct AvatarStreamEvent {
  AvatarEventKind kind = AvatarEventKind::kNone;
  std::string turn_id;          // ServerEvent.turn_id (empty for the header)
  uint64_t server_sequence = 0;  // ServerEvent.sequence
  double time_s = 0.0;           // AvatarEvent.time_s
  StreamHeader header;
  AudioBlock audio;
  std::vector<FaceFrame> frames;  // kFace: one or more frames, increasing time, weights in kArkitNames order
  VisemeEvent viseme;
  EmotionCommand emotion;
  GestureCommand gesture;
  CameraCommand camera;
  EnvironmentCommand environment;
  TurnEndEvent turn_end;
};

// Proto-style names ("TURN_END_REASON_COMPLETED", "EMOTION_KIND_JOY", ...); "UNKNOWN" for values not named.
const char* ToString(TurnEndReason reason);
const char* ToString(EmotionKind kind);
const char* ToString(CameraShot shot);
const char* ToString(SceneKind scene);
const char* ToString(AvatarEventKind kind);

// Index of an ARKit name in kArkitNames, or -1.
int ArkitIndex(const std::string& name);

}  // namespace avatarlink
