#include "FaceInterpolation.h"

#include <algorithm>

namespace avatarlink {

double BlendFactor(double a_s, double b_s, double t, InterpolationMode mode) {
  if (!(b_s > a_s)) {
    return t < b_s ? 0.0 : 1.0;
  }
  double alpha = (t - a_s) / (b_s - a_s);
  alpha = alpha < 0.0 ? 0.0 : (alpha > 1.0 ? 1.0 : alpha);
  if (mode == InterpolationMode::kSmoothstep) {
    alpha = alpha * alpha * (3.0 - 2.0 * alpha);
  }
  return alpha;
}

namespace {

float Mix(float a, float b, double alpha) {
  return static_cast<float>(static_cast<double>(a) + (static_cast<double>(b) - static_cast<double>(a)) * alpha);
}

}  // namespace

FaceFrame InterpolateFrames(const FaceFrame& a, const FaceFrame& b, double t, InterpolationMode mode) {
  const double alpha = BlendFactor(a.time_s, b.time_s, t, mode);
  FaceFrame out;
  out.time_s = t;
  for (size_t index = 0; index < out.weights.size(); ++index) {
    out.weights[index] = Mix(a.weights[index], b.weights[index], alpha);
  }
  out.head_pitch_deg = Mix(a.head_pitch_deg, b.head_pitch_deg, alpha);
  out.head_yaw_deg = Mix(a.head_yaw_deg, b.head_yaw_deg, alpha);
  out.head_roll_deg = Mix(a.head_roll_deg, b.head_roll_deg, alpha);
  return out;
}

FaceFrame SampleFrames(const FaceFrame* frames, size_t count, double t, InterpolationMode mode) {
  if (count == 0) {
    FaceFrame neutral;
    neutral.time_s = t;
    return neutral;
  }
  const FaceFrame* end = frames + count;
  // first frame after t
  const FaceFrame* after =
      std::upper_bound(frames, end, t, [](double time, const FaceFrame& frame) { return time < frame.time_s; });
  if (after == frames) {
    FaceFrame out = frames[0];
    out.time_s = t;
    return out;
  }
  if (after == end) {
    FaceFrame out = frames[count - 1];
    out.time_s = t;
    return out;
  }
  return InterpolateFrames(*(after - 1), *after, t, mode);
}

}  // namespace avatarlink
