// StreamDecoder on hand-built ServerEvents: a valid stream decodes to the right values; every contract violation
// gives an error (and no event where the event is unusable), never a crash.
#include <string>
#include <vector>

#include "StreamDecoder.h"
#include "TestFramework.h"
#include "almquist/v1/conversation.pb.h"

namespace pb = almquist::v1;
using avatarlink::AvatarEventKind;
using avatarlink::AvatarStreamEvent;
using avatarlink::DecodeStatus;
using avatarlink::kArkitNames;
using avatarlink::kNumBlendshapes;
using avatarlink::StreamDecoder;

namespace {

constexpr int kJawOpen = 17;  // index of jawOpen in kArkitNames

uint64_t next_sequence = 1;

pb::ServerEvent Header(std::vector<std::string> names = {}, uint32_t fps = 60) {
  if (names.empty()) {
    names.assign(kArkitNames.begin(), kArkitNames.end());
  }
  pb::ServerEvent event;
  event.set_sequence(next_sequence++);
  pb::AvatarHeader* header = event.mutable_avatar()->mutable_header();
  for (const std::string& name : names) {
    header->add_blendshape_names(name);
  }
  header->set_fps(fps);
  header->set_audio_sample_rate_hz(22050);
  header->set_audio_channels(1);
  header->set_audio_encoding("PCM16LE");
  header->set_protocol_version(1);
  header->set_lead_s(0.1);
  return event;
}

// Frames at the given multiples of 1/60 s; weight i of frame k is (i + k) / 100, jawOpen set to jaw.
pb::ServerEvent Face(const std::vector<int> ticks, float jaw = 0.5f, int weights = kNumBlendshapes,
                     const std::string& turn = "t1") {
  pb::ServerEvent event;
  event.set_sequence(next_sequence++);
  event.set_turn_id(turn);
  pb::AvatarEvent* avatar = event.mutable_avatar();
  avatar->set_time_s(ticks.empty() ? 0.0 : ticks[0] / 60.0);
  pb::FaceFrames* face = avatar->mutable_face();
  for (int tick : ticks) {
    pb::FaceFrame* frame = face->add_frames();
    frame->set_time_s(tick / 60.0);
    for (int index = 0; index < weights; ++index) {
      frame->add_weights(index == kJawOpen ? jaw : static_cast<float>(index % 50) / 100.0f);
    }
    frame->set_head_yaw_deg(static_cast<float>(tick));
  }
  return event;
}

pb::ServerEvent Audio(double start_s, int samples, uint64_t audio_sequence, const std::string& turn = "t1") {
  pb::ServerEvent event;
  event.set_sequence(next_sequence++);
  event.set_turn_id(turn);
  pb::AvatarEvent* avatar = event.mutable_avatar();
  avatar->set_time_s(start_s);
  pb::AudioChunk* chunk = avatar->mutable_audio();
  std::string pcm;
  for (int index = 0; index < samples; ++index) {
    // -2, 300, -2, 300, ... little-endian
    const int value = index % 2 == 0 ? -2 : 300;
    pcm.push_back(static_cast<char>(value & 0xff));
    pcm.push_back(static_cast<char>((value >> 8) & 0xff));
  }
  chunk->set_pcm16(pcm);
  chunk->set_sample_rate_hz(22050);
  chunk->set_channels(1);
  chunk->set_start_s(start_s);
  chunk->set_sequence(audio_sequence);
  return event;
}

pb::ServerEvent Viseme(double start_s, int id, const std::string& turn = "t1") {
  pb::ServerEvent event;
  event.set_sequence(next_sequence++);
  event.set_turn_id(turn);
  pb::AvatarEvent* avatar = event.mutable_avatar();
  avatar->set_time_s(start_s);
  pb::Viseme* viseme = avatar->mutable_viseme();
  viseme->set_id(static_cast<pb::VisemeId>(id));
  viseme->set_start_s(start_s);
  viseme->set_duration_s(0.08);
  viseme->set_weight(1.0f);
  return event;
}

pb::ServerEvent TurnEnd(double time_s, double stop_s, pb::TurnEndReason reason, const std::string& turn = "t1") {
  pb::ServerEvent event;
  event.set_sequence(next_sequence++);
  event.set_turn_id(turn);
  pb::AvatarEvent* avatar = event.mutable_avatar();
  avatar->set_time_s(time_s);
  avatar->set_stop_s(stop_s);
  avatar->mutable_turn_end()->set_turn_id(turn);
  avatar->mutable_turn_end()->set_reason(reason);
  avatar->mutable_turn_end()->set_detail("test");
  return event;
}

// Decodes and requires success.
AvatarStreamEvent DecodeOk(StreamDecoder& decoder, const pb::ServerEvent& event, bool* ok) {
  AvatarStreamEvent out;
  const DecodeStatus status = decoder.Decode(event, out);
  *ok = status.Ok() && status.has_event;
  if (!*ok) {
    std::printf("  unexpected: %s\n", status.error.c_str());
  }
  return out;
}

}  // namespace

AL_TEST(decoder_valid_stream_decodes_every_kind) {
  StreamDecoder decoder;
  bool ok = false;
  AvatarStreamEvent header = DecodeOk(decoder, Header(), &ok);
  AL_REQUIRE(ok);
  AL_CHECK(header.kind == AvatarEventKind::kHeader);
  AL_CHECK_EQ(header.header.fps, 60u);
  AL_CHECK_EQ(header.header.audio_sample_rate_hz, 22050u);
  AL_CHECK_EQ(header.header.blendshape_names.size(), 52u);
  AL_CHECK_NEAR(header.header.lead_s, 0.1, 1e-12);
  AL_CHECK(decoder.HasHeader());

  pb::ServerEvent environment;
  environment.set_turn_id("t1");
  environment.mutable_avatar()->set_time_s(0.5);
  environment.mutable_avatar()->mutable_environment()->set_scene(pb::SCENE_MOVIE_THEATER);
  environment.mutable_avatar()->mutable_environment()->set_reason("topic: movies");
  AvatarStreamEvent scene = DecodeOk(decoder, environment, &ok);
  AL_REQUIRE(ok);
  AL_CHECK(scene.kind == AvatarEventKind::kEnvironment);
  AL_CHECK(scene.environment.scene == avatarlink::SceneKind::kMovieTheater);
  AL_CHECK_EQ(scene.environment.reason, std::string("topic: movies"));
  AL_CHECK_EQ(scene.turn_id, std::string("t1"));

  pb::ServerEvent camera;
  camera.mutable_avatar()->set_time_s(0.5);
  camera.mutable_avatar()->mutable_camera()->set_shot(pb::SHOT_CLOSE_UP);
  camera.mutable_avatar()->mutable_camera()->set_transition_s(0.4);
  AvatarStreamEvent shot = DecodeOk(decoder, camera, &ok);
  AL_REQUIRE(ok);
  AL_CHECK(shot.camera.shot == avatarlink::CameraShot::kCloseUp);
  AL_CHECK_NEAR(shot.camera.transition_s, 0.4, 1e-12);

  pb::ServerEvent emotion;
  emotion.mutable_avatar()->set_time_s(0.5);
  emotion.mutable_avatar()->mutable_emotion()->set_kind(pb::EMOTION_KIND_JOY);
  emotion.mutable_avatar()->mutable_emotion()->set_intensity(0.6f);
  AvatarStreamEvent joy = DecodeOk(decoder, emotion, &ok);
  AL_REQUIRE(ok);
  AL_CHECK(joy.emotion.kind == avatarlink::EmotionKind::kJoy);
  AL_CHECK_NEAR(joy.emotion.intensity, 0.6, 1e-6);

  pb::ServerEvent gesture;
  gesture.mutable_avatar()->set_time_s(0.5);
  gesture.mutable_avatar()->mutable_gesture()->set_name("nod");
  gesture.mutable_avatar()->mutable_gesture()->set_intensity(0.5f);
  gesture.mutable_avatar()->mutable_gesture()->set_duration_s(0.8);
  AvatarStreamEvent nod = DecodeOk(decoder, gesture, &ok);
  AL_REQUIRE(ok);
  AL_CHECK_EQ(nod.gesture.name, std::string("nod"));

  AvatarStreamEvent audio = DecodeOk(decoder, Audio(0.5, 441, 0), &ok);
  AL_REQUIRE(ok);
  AL_CHECK(audio.kind == AvatarEventKind::kAudio);
  AL_REQUIRE(audio.audio.samples.size() == 441u);
  AL_CHECK_EQ(audio.audio.samples[0], -2);
  AL_CHECK_EQ(audio.audio.samples[1], 300);
  AL_CHECK_NEAR(audio.audio.EndS(), 0.52, 1e-12);
  DecodeOk(decoder, Audio(0.52, 441, 1), &ok);  // contiguous: starts where the previous ended
  AL_CHECK(ok);

  AvatarStreamEvent face = DecodeOk(decoder, Face({32, 33, 34}, 0.75f), &ok);
  AL_REQUIRE(ok);
  AL_CHECK(face.kind == AvatarEventKind::kFace);
  AL_REQUIRE(face.frames.size() == 3u);
  AL_CHECK_NEAR(face.frames[1].time_s, 33 / 60.0, 1e-12);
  AL_CHECK_NEAR(face.frames[1].weights[kJawOpen], 0.75, 1e-7);
  AL_CHECK_NEAR(face.frames[1].weights[3], 0.03, 1e-7);
  AL_CHECK_NEAR(face.frames[2].head_yaw_deg, 34.0, 1e-6);

  AvatarStreamEvent viseme = DecodeOk(decoder, Viseme(0.56, pb::VISEME_AA), &ok);
  AL_REQUIRE(ok);
  AL_CHECK_EQ(viseme.viseme.id, 10);
  AL_CHECK_NEAR(viseme.viseme.duration_s, 0.08, 1e-12);

  AvatarStreamEvent end = DecodeOk(decoder, TurnEnd(0.56, 0.54, pb::TURN_END_REASON_COMPLETED), &ok);
  AL_REQUIRE(ok);
  AL_CHECK(end.turn_end.reason == avatarlink::TurnEndReason::kCompleted);
  AL_CHECK_NEAR(end.turn_end.stop_s, 0.54, 1e-12);
  AL_CHECK_EQ(end.turn_end.detail, std::string("test"));
  AL_CHECK_EQ(decoder.ErrorCount(), 0u);
}

AL_TEST(decoder_ignores_text_events) {
  StreamDecoder decoder;
  pb::ServerEvent token;
  token.mutable_token()->set_text("Hello");
  AvatarStreamEvent out;
  const DecodeStatus status = decoder.Decode(token, out);
  AL_CHECK(status.Ok());
  AL_CHECK(!status.has_event);
  AL_CHECK_EQ(decoder.ErrorCount(), 0u);
}

AL_TEST(decoder_rejects_events_before_the_header) {
  StreamDecoder decoder;
  AvatarStreamEvent out;
  DecodeStatus status = decoder.Decode(Face({0, 1, 2}), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "before a valid header");
  status = decoder.Decode(Header(), out);
  AL_CHECK(status.Ok() && status.has_event);
  status = decoder.Decode(Face({0, 1, 2}), out);
  AL_CHECK(status.Ok() && status.has_event);
  AL_CHECK_EQ(decoder.ErrorCount(), 1u);
  AL_CHECK_EQ(decoder.Errors().size(), 1u);
}

AL_TEST(decoder_rejects_a_header_with_the_wrong_name_count) {
  StreamDecoder decoder;
  std::vector<std::string> names(kArkitNames.begin(), kArkitNames.end() - 1);
  AvatarStreamEvent out;
  DecodeStatus status = decoder.Decode(Header(names), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "51 blendshape names");
  AL_CHECK(!decoder.HasHeader());
  // without a valid header nothing after it is usable
  status = decoder.Decode(Face({0}), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "before a valid header");
}

AL_TEST(decoder_rejects_unknown_and_duplicate_names) {
  StreamDecoder decoder;
  std::vector<std::string> names(kArkitNames.begin(), kArkitNames.end());
  names[5] = "mouthSomething";
  AvatarStreamEvent out;
  DecodeStatus status = decoder.Decode(Header(names), out);
  AL_CHECK_CONTAINS(status.error, "unknown blendshape name 'mouthSomething'");
  names[5] = names[6];
  status = decoder.Decode(Header(names), out);
  AL_CHECK_CONTAINS(status.error, "appears twice");
  AL_CHECK(!decoder.HasHeader());
}

AL_TEST(decoder_remaps_a_header_in_another_order) {
  StreamDecoder decoder;
  std::vector<std::string> names(kArkitNames.begin(), kArkitNames.end());
  std::swap(names[0], names[kJawOpen]);  // the server's weight 0 is jawOpen, weight 17 eyeBlinkLeft
  bool ok = false;
  DecodeOk(decoder, Header(names), &ok);
  AL_REQUIRE(ok);
  AvatarStreamEvent face = DecodeOk(decoder, Face({0}, 0.8f), &ok);
  AL_REQUIRE(ok);
  // Face() puts 0.8 at wire index 17 (eyeBlinkLeft here) and 0.0 at wire index 0 (jawOpen here)
  AL_CHECK_NEAR(face.frames[0].weights[0], 0.8, 1e-7);
  AL_CHECK_NEAR(face.frames[0].weights[kJawOpen], 0.0, 1e-7);
  AL_CHECK_NEAR(face.frames[0].weights[3], 0.03, 1e-7);  // untouched names stay in place
}

AL_TEST(decoder_rejects_wrong_weight_counts_and_values) {
  StreamDecoder decoder;
  bool ok = false;
  DecodeOk(decoder, Header(), &ok);
  AL_REQUIRE(ok);
  AvatarStreamEvent out;
  DecodeStatus status = decoder.Decode(Face({0, 1}, 0.5f, 51), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "51 weights, expected 52");
  status = decoder.Decode(Face({2}, 1.5f), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "outside [0, 1]");
  status = decoder.Decode(Face({}), out);
  AL_CHECK_CONTAINS(status.error, "no frames");
  // a rejected event leaves the stream usable
  DecodeOk(decoder, Face({3, 4}), &ok);
  AL_CHECK(ok);
  AL_CHECK_EQ(decoder.ErrorCount(), 3u);
}

AL_TEST(decoder_rejects_time_going_back) {
  StreamDecoder decoder;
  bool ok = false;
  DecodeOk(decoder, Header(), &ok);
  DecodeOk(decoder, Face({60, 61, 62}), &ok);
  AL_REQUIRE(ok);
  AvatarStreamEvent out;
  // another kind earlier than the last event
  DecodeStatus status = decoder.Decode(Audio(0.5, 100, 0), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "goes back");
  // the same kind: frames must strictly increase, also across events
  status = decoder.Decode(Face({62, 63}), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "not after the previous frame");
  // frames of one event in decreasing order
  pb::ServerEvent reversed = Face({70, 69});
  status = decoder.Decode(reversed, out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "not after the previous frame");
  // audio that does not advance
  DecodeOk(decoder, Audio(1.1, 100, 0), &ok);
  AL_CHECK(ok);
  status = decoder.Decode(Audio(1.1, 100, 1), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "is not after the previous chunk");
  DecodeOk(decoder, Viseme(1.2, 3), &ok);
  AL_CHECK(ok);
  status = decoder.Decode(Viseme(1.2, 4), out);
  AL_CHECK_CONTAINS(status.error, "not after the previous one");
}

AL_TEST(decoder_rejects_frames_off_the_grid_and_bad_visemes) {
  StreamDecoder decoder;
  bool ok = false;
  DecodeOk(decoder, Header(), &ok);
  pb::ServerEvent off = Face({10});
  off.mutable_avatar()->set_time_s(0.17);
  off.mutable_avatar()->mutable_face()->mutable_frames(0)->set_time_s(0.17);  // 10.2 frames
  AvatarStreamEvent out;
  DecodeStatus status = decoder.Decode(off, out);
  AL_CHECK_CONTAINS(status.error, "off the 1/fps grid");
  status = decoder.Decode(Face({12, 14}), out);
  AL_CHECK_CONTAINS(status.error, "not 1/fps apart");
  status = decoder.Decode(Viseme(0.3, 15), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "viseme id 15");
  pb::ServerEvent second = Header();
  second.mutable_avatar()->set_time_s(0.4);
  status = decoder.Decode(second, out);
  AL_CHECK_CONTAINS(status.error, "second header");
}

AL_TEST(decoder_flags_audio_sequence_gaps_and_discontinuities) {
  StreamDecoder decoder;
  bool ok = false;
  DecodeOk(decoder, Header(), &ok);
  DecodeOk(decoder, Audio(0.0, 2205, 0), &ok);
  AL_REQUIRE(ok);
  AvatarStreamEvent out;
  DecodeStatus status = decoder.Decode(Audio(0.1, 2205, 2), out);  // chunk 1 lost
  AL_CHECK(status.has_event);                                     // still playable
  AL_CHECK_CONTAINS(status.error, "audio sequence 2, expected 1");
  AL_CHECK_EQ(decoder.AudioSequenceGaps(), 1u);
  status = decoder.Decode(Audio(0.25, 2205, 3), out);  // 0.05 s hole inside the turn
  AL_CHECK(status.has_event);
  AL_CHECK_CONTAINS(status.error, "not contiguous");
  // a new turn may start after a gap
  DecodeOk(decoder, TurnEnd(0.35, 0.35, pb::TURN_END_REASON_COMPLETED), &ok);
  AL_CHECK(ok);
  DecodeOk(decoder, Audio(1.0, 2205, 4, "t2"), &ok);
  AL_CHECK(ok);
  AL_CHECK_EQ(decoder.ErrorCount(), 2u);
}

AL_TEST(decoder_turn_end_moves_kind_clocks_back_to_stop) {
  StreamDecoder decoder;
  bool ok = false;
  DecodeOk(decoder, Header(), &ok);
  DecodeOk(decoder, Face({60, 61, 62, 63, 64, 65}), &ok);  // 1.0 .. 1.0833
  AL_REQUIRE(ok);
  // interrupted at 1.0 s: frames past 1.0167 are dropped by the client
  DecodeOk(decoder, TurnEnd(1.0, 1.0 + 1 / 60.0, pb::TURN_END_REASON_INTERRUPTED), &ok);
  AL_REQUIRE(ok);
  // the next turn's frames start after stop_s, before frames that were sent and dropped
  DecodeOk(decoder, Face({62, 63}, 0.5f, kNumBlendshapes, "t2"), &ok);
  AL_CHECK(ok);
}

AL_TEST(decoder_survives_garbage_bytes) {
  StreamDecoder decoder;
  AvatarStreamEvent out;
  const unsigned char garbage[] = {0x0a, 0xff, 0x01, 0x02};  // a string field claiming 255 bytes
  const DecodeStatus status = decoder.DecodeSerialized(garbage, sizeof(garbage), out);
  AL_CHECK(!status.has_event);
  AL_CHECK_CONTAINS(status.error, "not a serialized ServerEvent");
  const std::string bytes = Header().SerializeAsString();
  AL_CHECK(decoder.DecodeSerialized(bytes.data(), bytes.size(), out).has_event);
  AL_CHECK(out.kind == AvatarEventKind::kHeader);
}
