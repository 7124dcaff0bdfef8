// StreamDecoder: almquist.v1.ServerEvent -> AvatarStreamEvent, checking the avatar stream contract as it goes.
//
// The header must come first and name the 52 ARKit blendshapes (any order: frames are remapped to kArkitNames
// order); every FaceFrame carries one weight per name; time_s never decreases across avatar events and strictly
// increases within audio, face frames and visemes; audio chunks are numbered 0, 1, 2, ... and contiguous inside a
// turn. A violation never crashes: Decode returns the error text and, where the event itself is unusable (no
// header yet, wrong weight count, time going back), no event. A turn end moves the per-kind clocks back to its
// stop_s, since the client drops whatever was sent past it.
//
// The header only forward-declares the protobuf message, so the UE module can include it without protobuf
// headers; the .cpp needs the C++ generated from protos/almquist/v1/*.proto.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "AvatarTypes.h"

namespace almquist {
namespace v1 {
class ServerEvent;
}  // namespace v1
}  // namespace almquist

namespace avatarlink {

struct DecodeStatus {
  bool has_event = false;  // `out` holds an avatar event to use (false for text events and rejected ones)
  std::string error;       // empty when the event met the contract

  bool Ok() const { return error.empty(); }
};

class StreamDecoder {
 public:
  // Decodes one ServerEvent. Events other than `avatar` (tokens, turn starts, text turn ends) give
  // {has_event: false, error: ""}. An event can be delivered with an error (an audio sequence gap: the chunk is
  // still playable) or rejected with one.
  DecodeStatus Decode(const almquist::v1::ServerEvent& event, AvatarStreamEvent& out);

  // The same from the serialized bytes of a ServerEvent.
  DecodeStatus DecodeSerialized(const void* data, size_t size, AvatarStreamEvent& out);

  bool HasHeader() const { return has_header_; }
  const StreamHeader& Header() const { return header_; }

  // Every error so far (the first kMaxStoredErrors texts are kept; ErrorCount counts all).
  static constexpr size_t kMaxStoredErrors = 100;
  const std::vector<std::string>& Errors() const { return errors_; }
  uint64_t ErrorCount() const { return error_count_; }
  uint64_t AudioSequenceGaps() const { return audio_sequence_gaps_; }

  // Forgets the stream (a new Converse call).
  void Reset();

 private:
  DecodeStatus Fail(std::string error);
  DecodeStatus Deliver(std::string error);

  bool has_header_ = false;
  StreamHeader header_;
  // header index -> kArkitNames index
  std::vector<int> remap_;
  bool have_event_time_ = false;
  double last_event_time_s_ = 0.0;
  bool have_audio_ = false;
  double last_audio_start_s_ = 0.0;
  double last_audio_end_s_ = 0.0;
  std::string last_audio_turn_;
  uint64_t next_audio_sequence_ = 0;
  bool have_frame_ = false;
  double last_frame_time_s_ = 0.0;
  bool have_viseme_ = false;
  double last_viseme_start_s_ = 0.0;
  std::vector<std::string> errors_;
  uint64_t error_count_ = 0;
  uint64_t audio_sequence_gaps_ = 0;
};

}  // namespace avatarlink
