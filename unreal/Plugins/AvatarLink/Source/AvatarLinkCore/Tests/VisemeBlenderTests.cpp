// VisemeBlender: a viseme's own pose inside its interval, dominance-weighted blending with neighbours, silence far
// from any viseme. Expected values are computed from the tables with the formula written out here.
#include <cmath>
#include <string>

#include "TestFramework.h"
#include "VisemeBlender.h"

using avatarlink::kVisemeDominance;
using avatarlink::kVisemePoses;
using avatarlink::VisemeBlender;
using avatarlink::VisemeEvent;

namespace {

constexpr int kSil = 0;
constexpr int kPP = 1;
constexpr int kAA = 10;
constexpr size_t kJawOpen = 17;
constexpr size_t kMouthPressLeft = 35;
constexpr size_t kMouthPressRight = 36;

VisemeEvent Viseme(int id, double start_s, double duration_s, float weight = 1.0f) {
  VisemeEvent viseme;
  viseme.id = id;
  viseme.start_s = start_s;
  viseme.duration_s = duration_s;
  viseme.weight = weight;
  return viseme;
}

double Dominance(int id, double distance_s) {
  return static_cast<double>(kVisemeDominance[static_cast<size_t>(id)]) * std::exp(-distance_s / 0.035);
}

double Pose(int id, size_t shape) { return static_cast<double>(kVisemePoses[static_cast<size_t>(id)][shape]); }

}  // namespace

AL_TEST(viseme_tables_name_the_expected_shapes) {
  AL_CHECK_EQ(std::string(avatarlink::kArkitNames[kJawOpen]), std::string("jawOpen"));
  AL_CHECK_EQ(std::string(avatarlink::kArkitNames[kMouthPressLeft]), std::string("mouthPressLeft"));
  AL_CHECK_EQ(std::string(avatarlink::kVisemeNames[kPP]), std::string("PP"));
  AL_CHECK_EQ(std::string(avatarlink::kVisemeNames[kAA]), std::string("aa"));
}

AL_TEST(viseme_pp_closes_the_lips) {
  VisemeBlender blender;
  AL_CHECK(blender.Add(Viseme(kPP, 0.0, 0.1)));
  const auto weights = blender.Sample(0.05);
  const double expected_press = 1.0 * 0.5 / (1.0 + 0.04);
  AL_CHECK_NEAR(weights[kMouthPressLeft], expected_press, 1e-6);
  AL_CHECK_NEAR(weights[kMouthPressRight], expected_press, 1e-6);
  AL_CHECK(weights[kMouthPressLeft] > 0.45f);
  AL_CHECK_EQ(weights[kJawOpen], 0.0f);
}

AL_TEST(viseme_sequence_blends_by_dominance) {
  // sil [0, 0.12) PP [0.12, 0.2) aa [0.2, 0.4) sil [0.4, 0.6)
  VisemeBlender blender;
  blender.Add(Viseme(kSil, 0.0, 0.12));
  blender.Add(Viseme(kPP, 0.12, 0.08));
  blender.Add(Viseme(kAA, 0.2, 0.2));
  blender.Add(Viseme(kSil, 0.4, 0.2));
  // the middle of aa: aa inside (d), PP 0.1 s away, the silences 0.18 s and 0.1 s away
  {
    const double d_sil_before = Dominance(kSil, 0.18);
    const double d_pp = Dominance(kPP, 0.1);
    const double d_aa = Dominance(kAA, 0.0);
    const double d_sil_after = Dominance(kSil, 0.1);
    const double total = d_sil_before + d_pp + d_aa + d_sil_after + 0.04;
    const auto weights = blender.Sample(0.3);
    AL_CHECK_NEAR(weights[kJawOpen], d_aa * Pose(kAA, kJawOpen) / total, 1e-6);
    AL_CHECK(weights[kJawOpen] > 0.5f);
    AL_CHECK_NEAR(weights[kMouthPressLeft], d_pp * Pose(kPP, kMouthPressLeft) / total, 1e-6);
  }
  // the middle of PP: the lips win over the open jaw next to them
  {
    const auto weights = blender.Sample(0.16);
    const double d_sil = Dominance(kSil, 0.04);
    const double d_pp = Dominance(kPP, 0.0);
    const double d_aa = Dominance(kAA, 0.04);
    const double d_sil_after = Dominance(kSil, 0.24);
    const double total = d_sil + d_pp + d_aa + d_sil_after + 0.04;
    AL_CHECK_NEAR(weights[kMouthPressLeft], d_pp * 0.5 / total, 1e-6);
    AL_CHECK_NEAR(weights[kJawOpen], d_aa * 0.7 / total, 1e-6);
    AL_CHECK(weights[kMouthPressLeft] > 2.0f * weights[kJawOpen]);
  }
}

AL_TEST(viseme_silence_where_nothing_is_near) {
  VisemeBlender blender;
  blender.Add(Viseme(kAA, 1.0, 0.2));
  for (double t : {0.0, 0.5, 2.0}) {
    const auto weights = blender.Sample(t);
    for (float weight : weights) {
      AL_CHECK(weight < 1e-3f);
    }
  }
  // just outside the interval the pose fades with exp(-dist / 35 ms)
  const double d = Dominance(kAA, 0.035);
  AL_CHECK_NEAR(blender.Sample(1.235)[kJawOpen], d * 0.7 / (d + 0.04), 1e-6);
}

AL_TEST(viseme_weight_scales_and_cut_drops) {
  VisemeBlender blender;
  blender.Add(Viseme(kAA, 0.0, 0.2, 0.5f));
  AL_CHECK_NEAR(blender.Sample(0.1)[kJawOpen], 0.5 * 0.7 * 0.7 / (0.7 + 0.04), 1e-6);
  blender.Add(Viseme(kPP, 0.2, 0.1));
  blender.Add(Viseme(kAA, 0.3, 0.2));
  AL_CHECK(!blender.Add(Viseme(15, 0.5, 0.1)));  // not a viseme id
  blender.Cut(0.25);  // interrupt: the PP is shortened, the last aa dropped
  AL_CHECK_EQ(blender.Size(), 2u);
  // at 0.4 only the tails of the first aa (0.2 s away) and of the shortened PP (0.15 s away) remain
  const double d_aa = Dominance(kAA, 0.2);
  const double d_pp = Dominance(kPP, 0.15);
  AL_CHECK_NEAR(blender.Sample(0.4)[kJawOpen], d_aa * 0.5 * 0.7 / (d_aa + d_pp + 0.04), 1e-6);
  AL_CHECK(blender.Sample(0.4)[kJawOpen] < 0.05f);
  blender.Prune(10.0);
  AL_CHECK_EQ(blender.Size(), 0u);
}
