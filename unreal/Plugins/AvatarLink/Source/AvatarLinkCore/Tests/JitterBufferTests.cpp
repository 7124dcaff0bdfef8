// JitterBuffer: underruns only when the face starves during a turn's audio, late frames, cuts on interrupt, drain
// after a turn end, idle between turns, and audio read on the clock.
#include <vector>

#include "JitterBuffer.h"
#include "TestFramework.h"

using avatarlink::AudioBlock;
using avatarlink::FaceFrame;
using avatarlink::JitterBuffer;

namespace {

constexpr double kFps = 60.0;
constexpr uint32_t kRate = 1000;  // 1 sample per millisecond keeps sample arithmetic readable

FaceFrame Frame(int tick) {
  FaceFrame frame;
  frame.time_s = tick / kFps;
  frame.weights[17] = static_cast<float>(tick) / 1000.0f;
  return frame;
}

// frames first..last (inclusive) on the 1/60 grid
void PushFrames(JitterBuffer& buffer, int first, int last) {
  for (int tick = first; tick <= last; ++tick) {
    buffer.PushFrame(Frame(tick));
  }
}

// audio [start_s, start_s + samples / 1000) whose sample k holds value_base + k
AudioBlock Block(double start_s, int samples, int value_base) {
  AudioBlock block;
  block.sample_rate_hz = kRate;
  block.channels = 1;
  block.start_s = start_s;
  for (int index = 0; index < samples; ++index) {
    block.samples.push_back(static_cast<int16_t>(value_base + index));
  }
  return block;
}

}  // namespace

AL_TEST(jitter_no_underrun_when_frames_arrive_ahead) {
  JitterBuffer buffer(kFps);
  PushFrames(buffer, 0, 60);
  buffer.PushAudio(Block(0.0, 1000, 0));
  for (int step = 0; step <= 90; ++step) {
    buffer.Pull(step / 90.0);
  }
  AL_CHECK_EQ(buffer.Stats().underruns, 0u);
  AL_CHECK_EQ(buffer.Stats().late_frames, 0u);
  AL_CHECK_EQ(buffer.Stats().pulls, 91u);
  AL_CHECK(buffer.TurnActive());
}

AL_TEST(jitter_counts_underruns_while_audio_plays) {
  JitterBuffer buffer(kFps);
  PushFrames(buffer, 0, 30);                // face up to 0.5 s
  buffer.PushAudio(Block(0.0, 1000, 0));    // audio up to 1.0 s
  buffer.Pull(0.5 + 0.5 / kFps);            // half a period past the newest frame: within the slack
  AL_CHECK_EQ(buffer.Stats().underruns, 0u);
  buffer.Pull(0.6);
  buffer.Pull(0.7);
  AL_CHECK_EQ(buffer.Stats().underruns, 2u);
  AL_CHECK(buffer.Stats().have_margin);
  AL_CHECK_NEAR(buffer.Stats().min_margin_s, -0.2, 1e-9);
  // the face holds its newest pose meanwhile
  AL_CHECK_NEAR(buffer.Sample(0.7).weights[17], 0.030, 1e-7);
  // frames that come now are late
  PushFrames(buffer, 31, 50);
  AL_CHECK_EQ(buffer.Stats().late_frames, 11u);  // 31/60 .. 41/60 lie before 0.7
  buffer.Pull(0.8);
  AL_CHECK_EQ(buffer.Stats().underruns, 2u);
}

AL_TEST(jitter_no_underrun_before_the_turn_audio_or_after_it) {
  JitterBuffer buffer(kFps);
  PushFrames(buffer, 60, 90);              // a turn from 1.0 s to 1.5 s
  buffer.PushAudio(Block(1.0, 500, 0));
  buffer.Pull(0.5);                        // the turn has not started playing: the avatar idles
  buffer.Pull(1.6);                        // its audio is over; the turn end is in flight
  AL_CHECK_EQ(buffer.Stats().underruns, 0u);
}

AL_TEST(jitter_turn_end_drains_and_idles_between_turns) {
  JitterBuffer buffer(kFps);
  AL_CHECK(buffer.IsIdle(0.0));
  PushFrames(buffer, 0, 60);
  buffer.PushAudio(Block(0.0, 1000, 0));
  AL_CHECK(buffer.TurnActive());
  AL_CHECK(!buffer.IsIdle(0.5));
  buffer.EndTurn(1.0);  // completed: stop_s is the end of the audio
  AL_CHECK(!buffer.TurnActive());
  AL_CHECK_EQ(buffer.Stats().frames_cut, 0u);
  AL_CHECK_EQ(buffer.Stats().audio_blocks_cut, 0u);
  for (int step = 50; step <= 120; ++step) {
    buffer.Pull(step / 60.0);  // plays out the rest, then idles: no frames, no turn, no underruns
  }
  AL_CHECK(buffer.IsIdle(2.0));
  AL_CHECK(!buffer.IsIdle(0.9));  // still draining before stop_s
  AL_CHECK_EQ(buffer.Stats().underruns, 0u);
  AL_CHECK_EQ(buffer.Stats().turns_started, 1u);
  AL_CHECK_EQ(buffer.Stats().turns_ended, 1u);
  // the next turn starts with its first data
  PushFrames(buffer, 180, 200);
  AL_CHECK(buffer.TurnActive());
  AL_CHECK_EQ(buffer.Stats().turns_started, 2u);
}

AL_TEST(jitter_cut_on_interrupt_drops_what_follows_stop) {
  JitterBuffer buffer(kFps);
  PushFrames(buffer, 0, 120);  // 0 .. 2.0 s
  for (int block = 0; block < 20; ++block) {
    buffer.PushAudio(Block(block * 0.1, 100, block * 100));  // 0.1 s blocks, sample k of the turn = k
  }
  buffer.Pull(0.9);
  const double stop_s = 1.0 + 1.0 / kFps;  // interrupt at 1.0 s, stop one frame later
  buffer.EndTurn(stop_s);
  AL_CHECK_NEAR(buffer.NewestFrameS(), stop_s, 1e-12);  // the frame at stop_s stays
  AL_CHECK_EQ(buffer.Stats().frames_cut, 59u);          // 62/60 .. 120/60
  // blocks from 1.1 on dropped (9), the one across stop_s shortened (1)
  AL_CHECK_EQ(buffer.Stats().audio_blocks_cut, 10u);
  // the pose after stop_s is the last kept frame's
  AL_CHECK_NEAR(buffer.Sample(1.5).weights[17], 0.061, 1e-7);
  // audio: samples up to stop_s (16 of the block at 1.0), then silence
  std::vector<int16_t> samples;
  const size_t filled = buffer.ReadAudio(1.0, 50, samples);
  AL_CHECK_EQ(filled, 16u);
  AL_REQUIRE(samples.size() == 50u);
  AL_CHECK_EQ(samples[0], 1000);
  AL_CHECK_EQ(samples[15], 1015);
  AL_CHECK_EQ(samples[16], 0);
  // no underrun afterwards although playout passes the newest frame
  buffer.Pull(1.2);
  buffer.Pull(1.4);
  AL_CHECK_EQ(buffer.Stats().underruns, 0u);
}

AL_TEST(jitter_read_audio_follows_the_clock_across_blocks_and_gaps) {
  JitterBuffer buffer(kFps);
  buffer.PushAudio(Block(0.0, 100, 0));
  buffer.PushAudio(Block(0.1, 100, 100));
  buffer.PushAudio(Block(0.5, 100, 500));  // the next turn's audio, after a gap
  std::vector<int16_t> samples;
  AL_CHECK_EQ(buffer.ReadAudio(0.09, 20, samples), 20u);  // across the first boundary
  AL_CHECK_EQ(samples[0], 90);
  AL_CHECK_EQ(samples[19], 109);
  AL_CHECK_EQ(buffer.AudioBlockCount(), 2u);  // the first block is consumed
  AL_CHECK_EQ(buffer.ReadAudio(0.19, 20, samples), 10u);   // 10 samples, then the gap's silence
  AL_CHECK_EQ(samples[9], 199);
  AL_CHECK_EQ(samples[10], 0);
  AL_CHECK_EQ(buffer.ReadAudio(0.49, 20, samples), 10u);
  AL_CHECK_EQ(samples[9], 0);
  AL_CHECK_EQ(samples[10], 500);
}

AL_TEST(jitter_pull_forgets_old_frames_but_keeps_interpolating) {
  JitterBuffer buffer(kFps);
  PushFrames(buffer, 0, 60);
  buffer.PushAudio(Block(0.0, 1000, 0));
  buffer.Pull(0.5);
  AL_CHECK_EQ(buffer.FrameCount(), 31u);  // 30/60 .. 60/60
  const FaceFrame pose = buffer.Pull(0.5 + 0.25 / kFps);
  AL_CHECK_NEAR(pose.weights[17], 0.03025, 1e-7);
  AL_CHECK_NEAR(pose.time_s, 0.5 + 0.25 / kFps, 1e-12);
}
