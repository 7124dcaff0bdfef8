#include "JitterBuffer.h"

#include <algorithm>
#include <cmath>

namespace avatarlink {

namespace {

// Times on the k/fps grid are compared with this slack so that a frame exactly at stop_s survives a cut.
constexpr double kTimeEpsilonS = 1e-9;

}  // namespace

JitterBuffer::JitterBuffer(double fps) : frame_period_s_(fps > 0.0 ? 1.0 / fps : 1.0 / 60.0) {}

void JitterBuffer::SetFps(double fps) {
  if (fps > 0.0) {
    frame_period_s_ = 1.0 / fps;
  }
}

void JitterBuffer::StartTurnIfIdle(double first_time_s) {
  if (turn_active_) {
    return;
  }
  turn_active_ = true;
  turn_face_until_s_ = first_time_s;
  turn_audio_end_s_ = first_time_s;
  ++stats_.turns_started;
}

void JitterBuffer::PushFrame(const FaceFrame& frame) {
  if (!frames_.empty() && frame.time_s <= frames_.back().time_s) {
    return;
  }
  StartTurnIfIdle(frame.time_s);
  ++stats_.frames_received;
  if (have_pulled_ && frame.time_s < playout_s_) {
    ++stats_.late_frames;
  }
  frames_.push_back(frame);
  turn_face_until_s_ = std::max(turn_face_until_s_, frame.time_s);
}

void JitterBuffer::PushFrames(const std::vector<FaceFrame>& frames) {
  for (const FaceFrame& frame : frames) {
    PushFrame(frame);
  }
}

void JitterBuffer::PushAudio(const AudioBlock& block) {
  if (block.SampleFrames() == 0) {
    return;
  }
  StartTurnIfIdle(block.start_s);
  ++stats_.audio_blocks_received;
  if (have_pulled_ && block.start_s < playout_s_) {
    ++stats_.late_audio_blocks;
  }
  audio_.push_back(block);
  turn_audio_end_s_ = std::max(turn_audio_end_s_, block.EndS());
}

void JitterBuffer::Cut(double stop_s) {
  while (!frames_.empty() && frames_.back().time_s > stop_s + kTimeEpsilonS) {
    frames_.pop_back();
    ++stats_.frames_cut;
  }
  while (!audio_.empty() && audio_.back().start_s >= stop_s - kTimeEpsilonS) {
    audio_.pop_back();
    ++stats_.audio_blocks_cut;
  }
  if (!audio_.empty() && audio_.back().EndS() > stop_s + kTimeEpsilonS) {
    AudioBlock& block = audio_.back();
    const double keep_frames = std::floor((stop_s - block.start_s) * block.sample_rate_hz + kTimeEpsilonS);
    block.samples.resize(static_cast<size_t>(std::max(0.0, keep_frames)) * block.channels);
    ++stats_.audio_blocks_cut;
  }
  turn_face_until_s_ = std::min(turn_face_until_s_, stop_s);
  turn_audio_end_s_ = std::min(turn_audio_end_s_, stop_s);
}

void JitterBuffer::EndTurn(double stop_s) {
  Cut(stop_s);
  if (turn_active_) {
    ++stats_.turns_ended;
  }
  turn_active_ = false;
  last_stop_s_ = stop_s;
}

FaceFrame JitterBuffer::Pull(double playout_s, InterpolationMode mode) {
  ++stats_.pulls;
  if (!have_pulled_ || playout_s > playout_s_) {
    playout_s_ = playout_s;
  }
  have_pulled_ = true;
  // Only while the turn's audio plays at playout_s: before it starts the avatar still idles, after its end the
  // turn end is in flight.
  if (turn_active_ && playout_s < turn_audio_end_s_) {
    const double margin = turn_face_until_s_ - playout_s;
    if (!stats_.have_margin || margin < stats_.min_margin_s) {
      stats_.min_margin_s = margin;
      stats_.have_margin = true;
    }
    if (margin < -frame_period_s_) {
      ++stats_.underruns;
    }
  }
  // keep the last frame at or before playout_s: the next pull interpolates from it
  const auto after = std::upper_bound(frames_.begin(), frames_.end(), playout_s,
                                      [](double time, const FaceFrame& frame) { return time < frame.time_s; });
  if (after - frames_.begin() > 1) {
    frames_.erase(frames_.begin(), after - 1);
  }
  return Sample(playout_s, mode);
}

FaceFrame JitterBuffer::Sample(double t, InterpolationMode mode) const {
  return SampleFrames(frames_.data(), frames_.size(), t, mode);
}

size_t JitterBuffer::ReadAudio(double from_s, size_t sample_frames, std::vector<int16_t>& out) {
  const uint32_t channels = audio_.empty() ? 1u : std::max(1u, audio_.front().channels);
  out.assign(sample_frames * channels, 0);
  size_t filled = 0;
  double to_s = from_s;
  for (const AudioBlock& block : audio_) {
    if (block.sample_rate_hz == 0) {
      continue;
    }
    const double rate = static_cast<double>(block.sample_rate_hz);
    to_s = from_s + static_cast<double>(sample_frames) / rate;
    if (block.start_s >= to_s) {
      break;
    }
    // sample frame of the block at from_s, and of the read at the block's start (rounded to the nearest sample)
    const long long first_in_block = std::llround((from_s - block.start_s) * rate);
    const long long block_frames = static_cast<long long>(block.SampleFrames());
    for (long long read_index = std::max(0LL, -first_in_block); read_index < static_cast<long long>(sample_frames);
         ++read_index) {
      const long long source = first_in_block + read_index;
      if (source >= block_frames) {
        break;
      }
      for (uint32_t channel = 0; channel < channels && channel < block.channels; ++channel) {
        out[static_cast<size_t>(read_index) * channels + channel] =
            block.samples[static_cast<size_t>(source) * block.channels + channel];
      }
      ++filled;
    }
  }
  while (!audio_.empty() && audio_.front().EndS() <= to_s + kTimeEpsilonS) {
    audio_.pop_front();
  }
  return filled;
}

}  // namespace avatarlink
