// VisemeBlender: ARKit mouth weights from Viseme events, for clients that drive the face from visemes rather than
// from the server's face frames.
//
// Coarticulation by dominance (Cohen & Massaro), as graphs/face.py does on the server: at time t each viseme i
// has dominance D_i = d_i inside its interval and d_i * exp(-dist / kDecayS) outside it (dist: seconds to the
// interval), d_i = kVisemeDominance[id]. The weights are sum(D_i * w_i * pose_i) / (sum(D_i) + kRestDominance):
// the dominance-weighted mean of the poses (w_i: the viseme's strength), pulled to silence (all zero) by a
// small constant rest term where no viseme is near.
#pragma once

#include <cstddef>
#include <vector>

#include "AvatarTypes.h"

namespace avatarlink {

class VisemeBlender {
 public:
  // Time constant of a viseme's reach outside its interval (graphs/face.py's decay_s).
  static constexpr double kDecayS = 0.035;
  // Dominance of the relaxed closed mouth everywhere (graphs/face.py's _REST).
  static constexpr double kRestDominance = 0.04;
  // Visemes further than this from t are left out: exp(-10) of their dominance is below float resolution here.
  static constexpr double kReachS = 10.0 * kDecayS;

  // Adds a viseme; ids outside kVisemeNames are ignored (returns false).
  bool Add(const VisemeEvent& viseme);
  // Drops visemes starting after stop_s and shortens one across it (an interrupt).
  void Cut(double stop_s);
  // Forgets visemes that ended more than kReachS before t.
  void Prune(double t);

  BlendshapeWeights Sample(double t) const;

  size_t Size() const { return visemes_.size(); }

 private:
  std::vector<VisemeEvent> visemes_;  // in the order added (the stream's start order)
};

}  // namespace avatarlink
