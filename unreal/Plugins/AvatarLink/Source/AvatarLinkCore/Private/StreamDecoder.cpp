#include "StreamDecoder.h"

#include <climits>
#include <cmath>
#include <cstdio>
#include <utility>

#include "almquist/v1/conversation.pb.h"

namespace avatarlink {

namespace pb = almquist::v1;

namespace {

// Times are doubles computed by the server (k / fps, sample counts / rate): equal within this is equal.
constexpr double kTimeEpsilonS = 1e-9;
// Weights are float32 clipped to [0, 1] on the server; allow float rounding.
constexpr float kWeightSlack = 1e-6f;

std::string Format(const char* format, double a, double b = 0.0, double c = 0.0) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer), format, a, b, c);
  return buffer;
}

const char* AvatarCaseName(const pb::AvatarEvent& avatar) {
  switch (avatar.event_case()) {
    case pb::AvatarEvent::kHeader:
      return "header";
    case pb::AvatarEvent::kAudio:
      return "audio";
    case pb::AvatarEvent::kFace:
      return "face";
    case pb::AvatarEvent::kViseme:
      return "viseme";
    case pb::AvatarEvent::kEmotion:
      return "emotion";
    case pb::AvatarEvent::kGesture:
      return "gesture";
    case pb::AvatarEvent::kCamera:
      return "camera";
    case pb::AvatarEvent::kEnvironment:
      return "environment";
    case pb::AvatarEvent::kTurnEnd:
      return "turn_end";
    case pb::AvatarEvent::EVENT_NOT_SET:
      break;
  }
  return "empty";
}

bool UnitInterval(float value) {
  return std::isfinite(value) && value >= -kWeightSlack && value <= 1.0f + kWeightSlack;
}

}  // namespace

void StreamDecoder::Reset() { *this = StreamDecoder(); }

DecodeStatus StreamDecoder::Fail(std::string error) {
  ++error_count_;
  if (errors_.size() < kMaxStoredErrors) {
    errors_.push_back(error);
  }
  DecodeStatus status;
  status.has_event = false;
  status.error = std::move(error);
  return status;
}

DecodeStatus StreamDecoder::Deliver(std::string error) {
  DecodeStatus status;
  if (!error.empty()) {
    status = Fail(std::move(error));
  }
  status.has_event = true;
  return status;
}

DecodeStatus StreamDecoder::DecodeSerialized(const void* data, size_t size, AvatarStreamEvent& out) {
  pb::ServerEvent event;
  if (size > static_cast<size_t>(INT_MAX) || !event.ParseFromArray(data, static_cast<int>(size))) {
    return Fail("bytes are not a serialized ServerEvent");
  }
  return Decode(event, out);
}

DecodeStatus StreamDecoder::Decode(const pb::ServerEvent& event, AvatarStreamEvent& out) {
  if (event.event_case() != pb::ServerEvent::kAvatar) {
    return DecodeStatus{};
  }
  const pb::AvatarEvent& avatar = event.avatar();
  // "event 12 (face): " in front of every error, so a log line points at the ServerEvent
  char prefix_buffer[96];
  std::snprintf(prefix_buffer, sizeof(prefix_buffer), "event %llu (%s): ",
                static_cast<unsigned long long>(event.sequence()), AvatarCaseName(avatar));
  const std::string prefix = prefix_buffer;

  out = AvatarStreamEvent{};
  out.turn_id = event.turn_id();
  out.server_sequence = event.sequence();
  out.time_s = avatar.time_s();
  const double time_s = avatar.time_s();
  if (!std::isfinite(time_s) || time_s < 0.0) {
    return Fail(prefix + Format("time_s %g is not a time on the audio clock", time_s));
  }

  if (avatar.event_case() == pb::AvatarEvent::kHeader) {
    if (has_header_) {
      return Fail(prefix + "a second header (the header comes once, first)");
    }
    if (time_s != 0.0) {
      return Fail(prefix + Format("the header's time_s is %g, not 0 (the audio clock starts with it)", time_s));
    }
    const pb::AvatarHeader& source = avatar.header();
    if (source.blendshape_names_size() != kNumBlendshapes) {
      return Fail(prefix + Format("%g blendshape names, expected the %g ARKit names",
                                  source.blendshape_names_size(), kNumBlendshapes));
    }
    std::vector<int> remap(static_cast<size_t>(kNumBlendshapes), -1);
    std::vector<bool> seen(static_cast<size_t>(kNumBlendshapes), false);
    for (int index = 0; index < source.blendshape_names_size(); ++index) {
      const std::string& name = source.blendshape_names(index);
      const int arkit = ArkitIndex(name);
      if (arkit < 0) {
        return Fail(prefix + "unknown blendshape name '" + name + "' (not an ARKit name)");
      }
      if (seen[static_cast<size_t>(arkit)]) {
        return Fail(prefix + "blendshape name '" + name + "' appears twice");
      }
      seen[static_cast<size_t>(arkit)] = true;
      remap[static_cast<size_t>(index)] = arkit;
    }
    if (source.fps() == 0) {
      return Fail(prefix + "fps is 0");
    }
    if (source.audio_sample_rate_hz() == 0 || source.audio_channels() == 0) {
      return Fail(prefix + Format("audio format %g Hz x %g channels is empty",
                                  source.audio_sample_rate_hz(), source.audio_channels()));
    }
    if (source.audio_encoding() != "PCM16LE") {
      return Fail(prefix + "audio_encoding '" + source.audio_encoding() + "' is not PCM16LE");
    }
    if (source.protocol_version() != kProtocolVersion) {
      return Fail(prefix + Format("protocol_version %g, this client speaks %g", source.protocol_version(),
                                  kProtocolVersion));
    }
    if (!std::isfinite(source.lead_s()) || source.lead_s() < 0.0) {
      return Fail(prefix + Format("lead_s %g is negative", source.lead_s()));
    }
    StreamHeader& header = out.header;
    header.blendshape_names.assign(source.blendshape_names().begin(), source.blendshape_names().end());
    header.fps = source.fps();
    header.audio_sample_rate_hz = source.audio_sample_rate_hz();
    header.audio_channels = source.audio_channels();
    header.audio_encoding = source.audio_encoding();
    header.protocol_version = source.protocol_version();
    header.lead_s = source.lead_s();
    out.kind = AvatarEventKind::kHeader;
    header_ = header;
    remap_ = std::move(remap);
    has_header_ = true;
    have_event_time_ = true;
    last_event_time_s_ = 0.0;
    return Deliver("");
  }

  if (!has_header_) {
    return Fail(prefix + "avatar event before a valid header");
  }
  if (have_event_time_ && time_s < last_event_time_s_ - kTimeEpsilonS) {
    return Fail(prefix + Format("time_s %.6f goes back from %.6f (time_s never decreases)", time_s,
                                last_event_time_s_));
  }

  std::string warning;  // a problem that leaves the event usable
  switch (avatar.event_case()) {
    case pb::AvatarEvent::kAudio: {
      const pb::AudioChunk& chunk = avatar.audio();
      if (chunk.sample_rate_hz() != header_.audio_sample_rate_hz || chunk.channels() != header_.audio_channels) {
        return Fail(prefix + Format("audio %g Hz x %g channels differs from the header's", chunk.sample_rate_hz(),
                                    chunk.channels()));
      }
      if (chunk.pcm16().size() % (2u * chunk.channels()) != 0) {
        return Fail(prefix + Format("%g PCM bytes are not whole 16-bit sample frames",
                                    static_cast<double>(chunk.pcm16().size())));
      }
      if (std::fabs(chunk.start_s() - time_s) > kTimeEpsilonS) {
        return Fail(prefix + Format("start_s %.6f differs from time_s %.6f", chunk.start_s(), time_s));
      }
      if (have_audio_ && chunk.start_s() <= last_audio_start_s_ + kTimeEpsilonS) {
        return Fail(prefix + Format("audio start %.6f is not after the previous chunk's %.6f", chunk.start_s(),
                                    last_audio_start_s_));
      }
      AudioBlock& block = out.audio;
      block.sample_rate_hz = chunk.sample_rate_hz();
      block.channels = chunk.channels();
      block.start_s = chunk.start_s();
      block.sequence = chunk.sequence();
      const std::string& bytes = chunk.pcm16();
      block.samples.resize(bytes.size() / 2);
      for (size_t index = 0; index < block.samples.size(); ++index) {
        const unsigned low = static_cast<unsigned char>(bytes[2 * index]);
        const unsigned high = static_cast<unsigned char>(bytes[2 * index + 1]);
        block.samples[index] = static_cast<int16_t>(static_cast<uint16_t>(low | (high << 8)));
      }
      if (chunk.sequence() != next_audio_sequence_) {
        ++audio_sequence_gaps_;
        warning = prefix + Format("audio sequence %g, expected %g (chunks lost or reordered)",
                                  static_cast<double>(chunk.sequence()), static_cast<double>(next_audio_sequence_));
      } else if (have_audio_ && event.turn_id() == last_audio_turn_ &&
                 std::fabs(chunk.start_s() - last_audio_end_s_) > 1.5 / block.sample_rate_hz) {
        warning = prefix + Format("audio starts at %.6f, the turn's previous chunk ended at %.6f (not contiguous)",
                                  chunk.start_s(), last_audio_end_s_);
      }
      next_audio_sequence_ = chunk.sequence() + 1;
      have_audio_ = true;
      last_audio_start_s_ = chunk.start_s();
      last_audio_end_s_ = block.EndS();
      last_audio_turn_ = event.turn_id();
      out.kind = AvatarEventKind::kAudio;
      break;
    }
    case pb::AvatarEvent::kFace: {
      const pb::FaceFrames& face = avatar.face();
      if (face.frames_size() == 0) {
        return Fail(prefix + "no frames");
      }
      if (std::fabs(face.frames(0).time_s() - time_s) > kTimeEpsilonS) {
        return Fail(prefix + Format("first frame at %.6f differs from time_s %.6f", face.frames(0).time_s(), time_s));
      }
      const double fps = static_cast<double>(header_.fps);
      double previous_s = have_frame_ ? last_frame_time_s_ : -1.0;
      out.frames.resize(static_cast<size_t>(face.frames_size()));
      for (int index = 0; index < face.frames_size(); ++index) {
        const pb::FaceFrame& source = face.frames(index);
        const double frame_s = source.time_s();
        if (!std::isfinite(frame_s) || frame_s <= previous_s + kTimeEpsilonS) {
          return Fail(prefix + Format("frame %g at %.6f is not after the previous frame at %.6f", index, frame_s,
                                      previous_s));
        }
        const double ticks = frame_s * fps;
        if (std::fabs(ticks - std::round(ticks)) > 1e-6) {
          return Fail(prefix + Format("frame %g at %.6f is off the 1/fps grid (%g frames)", index, frame_s, ticks));
        }
        if (index > 0 && std::fabs((frame_s - previous_s) * fps - 1.0) > 1e-6) {
          return Fail(prefix + Format("frames %.6f and %.6f of one event are not 1/fps apart", previous_s, frame_s));
        }
        if (source.weights_size() != kNumBlendshapes) {
          return Fail(prefix + Format("frame at %.6f has %g weights, expected %g", frame_s, source.weights_size(),
                                      kNumBlendshapes));
        }
        FaceFrame& frame = out.frames[static_cast<size_t>(index)];
        frame.time_s = frame_s;
        for (int weight = 0; weight < kNumBlendshapes; ++weight) {
          const float value = source.weights(weight);
          if (!UnitInterval(value)) {
            return Fail(prefix + Format("frame at %.6f: weight %g is %g, outside [0, 1]", frame_s, weight, value));
          }
          frame.weights[static_cast<size_t>(remap_[static_cast<size_t>(weight)])] = value;
        }
        frame.head_pitch_deg = source.head_pitch_deg();
        frame.head_yaw_deg = source.head_yaw_deg();
        frame.head_roll_deg = source.head_roll_deg();
        if (!std::isfinite(frame.head_pitch_deg) || !std::isfinite(frame.head_yaw_deg) ||
            !std::isfinite(frame.head_roll_deg)) {
          return Fail(prefix + Format("frame at %.6f has a head angle that is not a number", frame_s));
        }
        previous_s = frame_s;
      }
      have_frame_ = true;
      last_frame_time_s_ = previous_s;
      out.kind = AvatarEventKind::kFace;
      break;
    }
    case pb::AvatarEvent::kViseme: {
      const pb::Viseme& source = avatar.viseme();
      if (source.id() < 0 || source.id() >= kNumVisemes) {
        return Fail(prefix + Format("viseme id %g is not one of the %g visemes", source.id(), kNumVisemes));
      }
      if (std::fabs(source.start_s() - time_s) > kTimeEpsilonS) {
        return Fail(prefix + Format("start_s %.6f differs from time_s %.6f", source.start_s(), time_s));
      }
      if (!std::isfinite(source.duration_s()) || source.duration_s() < 0.0 || !UnitInterval(source.weight())) {
        return Fail(prefix + Format("duration %g s or weight %g out of range", source.duration_s(), source.weight()));
      }
      if (have_viseme_ && source.start_s() <= last_viseme_start_s_ + kTimeEpsilonS) {
        return Fail(prefix + Format("viseme start %.6f is not after the previous one's %.6f", source.start_s(),
                                    last_viseme_start_s_));
      }
      out.viseme.id = source.id();
      out.viseme.start_s = source.start_s();
      out.viseme.duration_s = source.duration_s();
      out.viseme.weight = source.weight();
      have_viseme_ = true;
      last_viseme_start_s_ = source.start_s();
      out.kind = AvatarEventKind::kViseme;
      break;
    }
    case pb::AvatarEvent::kEmotion: {
      const pb::Emotion& source = avatar.emotion();
      if (!UnitInterval(source.intensity()) || !std::isfinite(source.blend_s()) || source.blend_s() < 0.0) {
        return Fail(prefix + Format("intensity %g or blend %g s out of range", source.intensity(), source.blend_s()));
      }
      out.emotion.kind = static_cast<EmotionKind>(source.kind());
      out.emotion.intensity = source.intensity();
      out.emotion.blend_s = source.blend_s();
      out.kind = AvatarEventKind::kEmotion;
      break;
    }
    case pb::AvatarEvent::kGesture: {
      const pb::Gesture& source = avatar.gesture();
      if (source.name().empty() || !UnitInterval(source.intensity()) || !std::isfinite(source.duration_s()) ||
          source.duration_s() < 0.0) {
        return Fail(prefix + "gesture '" + source.name() + "' has no name, or intensity/duration out of range");
      }
      out.gesture.name = source.name();
      out.gesture.intensity = source.intensity();
      out.gesture.duration_s = source.duration_s();
      out.kind = AvatarEventKind::kGesture;
      break;
    }
    case pb::AvatarEvent::kCamera: {
      const pb::Camera& source = avatar.camera();
      if (!std::isfinite(source.transition_s()) || source.transition_s() < 0.0) {
        return Fail(prefix + Format("transition %g s is negative", source.transition_s()));
      }
      out.camera.shot = static_cast<CameraShot>(source.shot());
      out.camera.reason = source.reason();
      out.camera.transition_s = source.transition_s();
      out.kind = AvatarEventKind::kCamera;
      break;
    }
    case pb::AvatarEvent::kEnvironment: {
      const pb::Environment& source = avatar.environment();
      out.environment.scene = static_cast<SceneKind>(source.scene());
      out.environment.reason = source.reason();
      out.kind = AvatarEventKind::kEnvironment;
      break;
    }
    case pb::AvatarEvent::kTurnEnd: {
      const double stop_s = avatar.stop_s();
      if (!std::isfinite(stop_s) || stop_s < 0.0) {
        return Fail(prefix + Format("stop_s %g is not a time on the audio clock", stop_s));
      }
      out.turn_end.reason = static_cast<TurnEndReason>(avatar.turn_end().reason());
      out.turn_end.detail = avatar.turn_end().detail();
      out.turn_end.stop_s = stop_s;
      // The client drops what was sent past stop_s, so the next turn's audio, frames and visemes only have to
      // come after stop_s.
      if (last_audio_start_s_ > stop_s) {
        last_audio_start_s_ = stop_s;
      }
      if (last_frame_time_s_ > stop_s) {
        last_frame_time_s_ = stop_s;
      }
      if (last_viseme_start_s_ > stop_s) {
        last_viseme_start_s_ = stop_s;
      }
      last_audio_turn_.clear();
      out.kind = AvatarEventKind::kTurnEnd;
      break;
    }
    case pb::AvatarEvent::kHeader:
    case pb::AvatarEvent::EVENT_NOT_SET:
      return Fail(prefix + "an AvatarEvent without an event");
  }
  have_event_time_ = true;
  last_event_time_s_ = time_s;
  return Deliver(std::move(warning));
}

}  // namespace avatarlink
