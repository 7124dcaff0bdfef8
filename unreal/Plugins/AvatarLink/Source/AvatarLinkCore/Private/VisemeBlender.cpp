#include "VisemeBlender.h"

#include <algorithm>
#include <cmath>

namespace avatarlink {

bool VisemeBlender::Add(const VisemeEvent& viseme) {
  if (viseme.id < 0 || viseme.id >= kNumVisemes || !(viseme.duration_s >= 0.0)) {
    return false;
  }
  visemes_.push_back(viseme);
  return true;
}

void VisemeBlender::Cut(double stop_s) {
  visemes_.erase(std::remove_if(visemes_.begin(), visemes_.end(),
                                [stop_s](const VisemeEvent& viseme) { return viseme.start_s >= stop_s; }),
                 visemes_.end());
  for (VisemeEvent& viseme : visemes_) {
    if (viseme.EndS() > stop_s) {
      viseme.duration_s = stop_s - viseme.start_s;
    }
  }
}

void VisemeBlender::Prune(double t) {
  visemes_.erase(std::remove_if(visemes_.begin(), visemes_.end(),
                                [t](const VisemeEvent& viseme) { return viseme.EndS() < t - kReachS; }),
                 visemes_.end());
}

BlendshapeWeights VisemeBlender::Sample(double t) const {
  std::array<double, kNumBlendshapes> sum{};
  double dominance_sum = 0.0;
  for (const VisemeEvent& viseme : visemes_) {
    const double distance = std::max(0.0, std::max(viseme.start_s - t, t - viseme.EndS()));
    if (distance > kReachS) {
      continue;
    }
    const size_t id = static_cast<size_t>(viseme.id);
    const double dominance = static_cast<double>(kVisemeDominance[id]) * std::exp(-distance / kDecayS);
    dominance_sum += dominance;
    const double scale = dominance * static_cast<double>(viseme.weight);
    for (size_t shape = 0; shape < sum.size(); ++shape) {
      sum[shape] += scale * static_cast<double>(kVisemePoses[id][shape]);
    }
  }
  BlendshapeWeights weights{};
  const double denominator = dominance_sum + kRestDominance;
  for (size_t shape = 0; shape < sum.size(); ++shape) {
    weights[shape] = static_cast<float>(sum[shape] / denominator);
  }
  return weights;
}

}  // namespace avatarlink
