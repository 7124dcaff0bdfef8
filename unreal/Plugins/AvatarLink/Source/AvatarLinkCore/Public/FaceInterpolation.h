// Face poses between received frames: the playout clock rarely falls on a frame's time (the render rate differs
// from the stream's fps), so a pose at time t blends the two frames around t.
#pragma once

#include <cstddef>

#include "AvatarTypes.h"

namespace avatarlink {

enum class InterpolationMode : int32_t {
  kLinear = 0,      // straight line between the frames: exact for values the server itself interpolated linearly
  kSmoothstep = 1,  // 3a^2 - 2a^3: eases in and out of each frame (zero slope at frames), stays within the two values
};

// The blend factor in [0, 1] for t between a_s and b_s (clamped outside; 0 when the interval is empty).
double BlendFactor(double a_s, double b_s, double t, InterpolationMode mode);

// The pose at t between frames a and b (a.time_s <= b.time_s): weights and head angles blended by BlendFactor.
// The result's time_s is t.
FaceFrame InterpolateFrames(const FaceFrame& a, const FaceFrame& b, double t, InterpolationMode mode);

// The pose at t from `count` frames in increasing time order: the two frames around t blended; clamped to the
// first/last frame outside them. count == 0 gives a neutral pose (all zero) at t.
FaceFrame SampleFrames(const FaceFrame* frames, size_t count, double t, InterpolationMode mode);

}  // namespace avatarlink
