// JitterBuffer: face frames and voice audio held on the audio clock until the playout clock (the client's audio
// position) reaches them.
//
// The server sends every event about lead_s ahead of its time, so frames normally arrive before playout needs
// them. The buffer counts what went wrong:
// - an underrun: a pull during a turn whose audio still plays at the playout time, while the newest frame is more
//   than one frame period behind it (the face has nothing to move to). One period of slack because the last frame
//   of a turn may sit up to a period before the end of its audio; a frame later than that is caught as an
//   interpolation error instead.
// - a late frame: one pushed when playout had already passed its time.
// A turn starts with its first frame or audio and ends with EndTurn(stop_s): everything after stop_s is dropped
// (an interrupt) and the turn drains without underruns. Between turns nothing is counted: the client idles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "AvatarTypes.h"
#include "FaceInterpolation.h"

namespace avatarlink {

struct JitterStats {
  uint64_t frames_received = 0;
  uint64_t audio_blocks_received = 0;
  uint64_t late_frames = 0;        // pushed after playout had passed their time
  uint64_t late_audio_blocks = 0;  // pushed after playout had passed their start
  uint64_t underruns = 0;          // pulls starved of frames while the turn's audio plays (see above)
  uint64_t pulls = 0;
  uint64_t frames_cut = 0;        // dropped by Cut / EndTurn
  uint64_t audio_blocks_cut = 0;  // dropped or shortened by Cut / EndTurn
  uint64_t turns_started = 0;
  uint64_t turns_ended = 0;
  // Smallest margin (newest frame time - playout time) seen by a pull while a turn's audio played; a negative
  // value means the face ran dry. Meaningful when have_margin is true.
  bool have_margin = false;
  double min_margin_s = 0.0;
};

class JitterBuffer {
 public:
  explicit JitterBuffer(double fps = 60.0);

  // The stream's frame rate (AvatarHeader.fps): sets the one-period slack of underrun counting.
  void SetFps(double fps);
  double FramePeriodS() const { return frame_period_s_; }

  // Frames must come in increasing time (the decoder checks); a frame not after the newest one is ignored.
  void PushFrame(const FaceFrame& frame);
  void PushFrames(const std::vector<FaceFrame>& frames);
  void PushAudio(const AudioBlock& block);

  // The avatar's turn end: drops everything after stop_s and lets the turn drain.
  void EndTurn(double stop_s);
  // Drops frames after stop_s and audio from stop_s on (a block across stop_s is shortened).
  void Cut(double stop_s);

  // Advances playout to playout_s (the client's audio position): counts underruns, forgets frames no longer
  // needed (keeps the last one at or before playout_s), and returns the pose there.
  FaceFrame Pull(double playout_s, InterpolationMode mode = InterpolationMode::kLinear);
  // The pose at t from the frames held now, without touching statistics (clamped to the first/last frame).
  FaceFrame Sample(double t, InterpolationMode mode = InterpolationMode::kLinear) const;

  // Fills `out` with sample_frames * channels samples of voice from from_s on (silence where no audio is held,
  // e.g. between turns) and forgets audio that ends before the read's end. Returns how many sample frames came
  // from held audio. channels and rate are those of the held blocks (the header's).
  size_t ReadAudio(double from_s, size_t sample_frames, std::vector<int16_t>& out);

  // A turn has sent frames or audio and not ended yet.
  bool TurnActive() const { return turn_active_; }
  // Nothing to play at t: no turn active and t at or past the last turn's stop_s. The UE side holds or rests the
  // face then.
  bool IsIdle(double playout_s) const { return !turn_active_ && playout_s >= last_stop_s_; }

  size_t FrameCount() const { return frames_.size(); }
  size_t AudioBlockCount() const { return audio_.size(); }
  // Time of the newest frame held (0 when none).
  double NewestFrameS() const { return frames_.empty() ? 0.0 : frames_.back().time_s; }
  const JitterStats& Stats() const { return stats_; }

 private:
  void StartTurnIfIdle(double first_time_s);

  double frame_period_s_;
  std::vector<FaceFrame> frames_;  // increasing time; pruned from the front by Pull
  std::deque<AudioBlock> audio_;   // increasing start
  bool turn_active_ = false;
  double turn_face_until_s_ = 0.0;   // newest frame time of the active turn (its first data time before a frame)
  double turn_audio_end_s_ = 0.0;    // end of the active turn's audio received so far
  double last_stop_s_ = 0.0;
  bool have_pulled_ = false;
  double playout_s_ = 0.0;
  JitterStats stats_;
};

}  // namespace avatarlink
