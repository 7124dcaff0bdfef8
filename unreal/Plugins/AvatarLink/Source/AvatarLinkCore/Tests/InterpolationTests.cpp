// Interpolation between received frames: exact values at known times, both modes, clamping at the ends.
#include <vector>

#include "FaceInterpolation.h"
#include "TestFramework.h"

using avatarlink::FaceFrame;
using avatarlink::InterpolationMode;

namespace {

FaceFrame Frame(double time_s, float jaw, float yaw) {
  FaceFrame frame;
  frame.time_s = time_s;
  frame.weights[17] = jaw;
  frame.weights[0] = 1.0f - jaw;
  frame.head_yaw_deg = yaw;
  return frame;
}

}  // namespace

AL_TEST(interpolation_linear_exact_values) {
  const FaceFrame a = Frame(1.0 / 60.0, 0.2f, 2.0f);
  const FaceFrame b = Frame(2.0 / 60.0, 0.8f, -4.0f);
  const FaceFrame quarter = avatarlink::InterpolateFrames(a, b, 1.25 / 60.0, InterpolationMode::kLinear);
  AL_CHECK_NEAR(quarter.weights[17], 0.35, 1e-6);
  AL_CHECK_NEAR(quarter.weights[0], 0.65, 1e-6);
  AL_CHECK_NEAR(quarter.head_yaw_deg, 0.5, 1e-6);
  AL_CHECK_NEAR(quarter.time_s, 1.25 / 60.0, 1e-15);
  const FaceFrame at_a = avatarlink::InterpolateFrames(a, b, a.time_s, InterpolationMode::kLinear);
  AL_CHECK_EQ(at_a.weights[17], 0.2f);
  const FaceFrame at_b = avatarlink::InterpolateFrames(a, b, b.time_s, InterpolationMode::kLinear);
  AL_CHECK_EQ(at_b.weights[17], 0.8f);
}

AL_TEST(interpolation_smoothstep_eases_and_meets_linear_in_the_middle) {
  const FaceFrame a = Frame(0.0, 0.2f, 0.0f);
  const FaceFrame b = Frame(0.1, 0.8f, 10.0f);
  // a = 0.25: 3a^2 - 2a^3 = 0.15625
  const FaceFrame quarter = avatarlink::InterpolateFrames(a, b, 0.025, InterpolationMode::kSmoothstep);
  AL_CHECK_NEAR(quarter.weights[17], 0.2 + 0.6 * 0.15625, 1e-6);
  AL_CHECK_NEAR(quarter.head_yaw_deg, 1.5625, 1e-5);
  const FaceFrame middle = avatarlink::InterpolateFrames(a, b, 0.05, InterpolationMode::kSmoothstep);
  AL_CHECK_NEAR(middle.weights[17], 0.5, 1e-6);
  AL_CHECK_NEAR(avatarlink::BlendFactor(0.0, 0.1, 0.075, InterpolationMode::kSmoothstep), 0.84375, 1e-12);
}

AL_TEST(interpolation_sample_frames_picks_the_pair_around_t_and_clamps) {
  const std::vector<FaceFrame> frames = {Frame(0.0, 0.0f, 0.0f), Frame(0.1, 0.5f, 1.0f), Frame(0.2, 0.3f, 3.0f)};
  const auto sample = [&frames](double t) {
    return avatarlink::SampleFrames(frames.data(), frames.size(), t, InterpolationMode::kLinear);
  };
  AL_CHECK_NEAR(sample(0.05).weights[17], 0.25, 1e-6);
  AL_CHECK_NEAR(sample(0.15).weights[17], 0.4, 1e-6);
  AL_CHECK_NEAR(sample(0.175).head_yaw_deg, 2.5, 1e-5);
  AL_CHECK_NEAR(sample(0.1).weights[17], 0.5, 1e-7);   // exactly on a frame
  AL_CHECK_NEAR(sample(-1.0).weights[17], 0.0, 1e-7);  // before the first frame
  AL_CHECK_NEAR(sample(5.0).weights[17], 0.3, 1e-7);   // after the last frame
  AL_CHECK_NEAR(sample(5.0).time_s, 5.0, 1e-12);
  const FaceFrame none = avatarlink::SampleFrames(nullptr, 0, 1.0, InterpolationMode::kLinear);
  AL_CHECK_EQ(none.weights[17], 0.0f);
}

AL_TEST(interpolation_blend_factor_of_an_empty_interval) {
  AL_CHECK_EQ(avatarlink::BlendFactor(1.0, 1.0, 0.5, InterpolationMode::kLinear), 0.0);
  AL_CHECK_EQ(avatarlink::BlendFactor(1.0, 1.0, 1.5, InterpolationMode::kLinear), 1.0);
}
