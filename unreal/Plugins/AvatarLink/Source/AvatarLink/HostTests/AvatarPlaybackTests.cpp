// Host tests of FAvatarPlayback (Private/AvatarPlayback.*), the Unreal-free part of the module that plays the
// avatar stream against the voice's audio clock. Built with g++ by tests/test_unreal_plugin.py together with the
// core's sources; UBT skips this folder (.ubtignore).
//
// A simulated server sends a stream the way graphs/avatar.py does (each event about lead_s before its time, on a
// clock that starts with the header), a simulated mixer takes the queued voice the way USoundWaveProcedural feeds
// the audio mixer (a block of samples per callback, heard OutputLatency later), and every check compares what the
// playback did with what a listener hears: every sample once and in order, the face at the time being heard,
// commands and turn ends when their time is heard.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "AvatarPlayback.h"

namespace {

int Failures = 0;
int Checks = 0;
int FailuresShown = 0;  // per test: a check failing on every tick prints a few times, not thousands

void Check(bool bOk, const char* What, int Line) {
  ++Checks;
  if (!bOk && ++Failures && ++FailuresShown <= 5) {
    std::printf("  line %d: %s\n", Line, What);
  }
}
void CheckNear(double Actual, double Expected, double Tolerance, const char* What, int Line) {
  ++Checks;
  if (!(std::fabs(Actual - Expected) <= Tolerance) && ++Failures && ++FailuresShown <= 5) {
    std::printf("  line %d: %s: %.6f, expected %.6f +- %.6f\n", Line, What, Actual, Expected, Tolerance);
  }
}
#define CHECK(cond) Check((cond), #cond, __LINE__)
#define CHECK_NEAR(a, b, tol) CheckNear((a), (b), (tol), #a, __LINE__)

using avatarlink::AvatarEventKind;
using avatarlink::AvatarStreamEvent;

constexpr uint32_t kRate = 22050;
constexpr double kFps = 60.0;
constexpr double kLeadS = 0.1;
constexpr double kNetworkS = 0.02;
constexpr int kChunkFrames = 1024;  // ~46 ms of voice per AudioChunk
constexpr int kMixerPull = 1024;    // samples the mixer takes per callback
constexpr double kLatencyS = 0.05;  // the simulated device latency; the playback is told the same
constexpr double kTickS = 1.0 / 60.0;
const int kJawOpen = avatarlink::ArkitIndex("jawOpen");

// Every voice sample encodes its position in the stream (modulo ~2.9 s), so the listener can tell what it hears;
// 0 is silence.
constexpr int64_t kCodePeriod = 65000;
int16_t Encode(int64_t Frame) { return static_cast<int16_t>(static_cast<uint16_t>(1 + Frame % kCodePeriod)); }

// --- the server ------------------------------------------------------------------------------------------------

struct FTimedEvent {
  double DeliverWallS;
  AvatarStreamEvent Event;
};

struct FServer {
  std::vector<FTimedEvent> Events;

  static double Deliver(double TimeS) { return std::max(0.0, TimeS - kLeadS + kNetworkS); }

  void Header() {
    AvatarStreamEvent Event;
    Event.kind = AvatarEventKind::kHeader;
    Event.header.fps = static_cast<uint32_t>(kFps);
    Event.header.audio_sample_rate_hz = kRate;
    Event.header.audio_channels = 1;
    Event.header.audio_encoding = "PCM16LE";
    Event.header.protocol_version = 1;
    Event.header.lead_s = kLeadS;
    for (const char* Name : avatarlink::kArkitNames) {
      Event.header.blendshape_names.push_back(Name);
    }
    Events.push_back({0.0, Event});
  }

  // A turn's voice and face over [StartS, EndS) (StartS a whole sample), sent until CutWallS.
  void Turn(const std::string& Id, double StartS, double EndS, double CutWallS = 1e9, double LateFromS = -1.0,
            double LateToS = -1.0, double LateByS = 0.0) {
    const int64_t First = std::llround(StartS * kRate);
    const int64_t Last = std::llround(EndS * kRate);
    for (int64_t Frame = First; Frame < Last; Frame += kChunkFrames) {
      AvatarStreamEvent Event;
      Event.kind = AvatarEventKind::kAudio;
      Event.turn_id = Id;
      Event.audio.sample_rate_hz = kRate;
      Event.audio.channels = 1;
      Event.audio.start_s = static_cast<double>(Frame) / kRate;
      Event.time_s = Event.audio.start_s;
      for (int64_t Index = Frame; Index < std::min(Last, Frame + kChunkFrames); ++Index) {
        Event.audio.samples.push_back(Encode(Index));
      }
      double Wall = Deliver(Event.time_s);
      if (Event.time_s >= LateFromS && Event.time_s < LateToS) {
        Wall += LateByS;
      }
      if (Wall < CutWallS) {
        Events.push_back({Wall, Event});
      }
    }
    // three frames per message on the k / fps grid; jawOpen is a sawtooth of the time (frac(t))
    const int64_t FirstFrame = static_cast<int64_t>(std::ceil(StartS * kFps - 1e-9));
    const int64_t LastFrame = static_cast<int64_t>(std::floor(EndS * kFps + 1e-9));
    for (int64_t K = FirstFrame; K <= LastFrame; K += 3) {
      AvatarStreamEvent Event;
      Event.kind = AvatarEventKind::kFace;
      Event.turn_id = Id;
      for (int64_t J = K; J < std::min(LastFrame + 1, K + 3); ++J) {
        avatarlink::FaceFrame Frame;
        Frame.time_s = static_cast<double>(J) / kFps;
        Frame.weights[static_cast<size_t>(kJawOpen)] = static_cast<float>(J % 60) / 60.0f;
        Frame.head_yaw_deg = 5.0f;
        Event.frames.push_back(Frame);
      }
      Event.time_s = Event.frames.front().time_s;
      double Wall = Deliver(Event.time_s);
      if (Event.time_s >= LateFromS && Event.time_s < LateToS) {
        Wall += LateByS;
      }
      if (Wall < CutWallS) {
        Events.push_back({Wall, Event});
      }
    }
  }

  void TurnEnd(const std::string& Id, avatarlink::TurnEndReason Reason, double StopS, double WallS) {
    AvatarStreamEvent Event;
    Event.kind = AvatarEventKind::kTurnEnd;
    Event.turn_id = Id;
    Event.time_s = StopS;
    Event.turn_end.reason = Reason;
    Event.turn_end.detail = "test";
    Event.turn_end.stop_s = StopS;
    Events.push_back({WallS, Event});
  }

  void Emotion(const std::string& Id, double TimeS) {
    AvatarStreamEvent Event;
    Event.kind = AvatarEventKind::kEmotion;
    Event.turn_id = Id;
    Event.time_s = TimeS;
    Event.emotion.kind = avatarlink::EmotionKind::kJoy;
    Event.emotion.intensity = 0.8f;
    Events.push_back({Deliver(TimeS), Event});
  }
};

// --- the mixer and the listener ---------------------------------------------------------------------------------

struct FHeardBlock {
  double FromWallS;
  std::vector<int16_t> Samples;
};

struct FMixer {
  std::deque<int16_t> Wave;
  double NextPullWallS = 0.0;
  std::vector<FHeardBlock> Heard;
  int64_t LastTakenFrame = -1;  // decoded stream position of the newest sample taken

  void Advance(double WallS) {
    while (NextPullWallS <= WallS) {
      FHeardBlock Block;
      Block.FromWallS = NextPullWallS + kLatencyS;
      for (int Index = 0; Index < kMixerPull && !Wave.empty(); ++Index) {
        Block.Samples.push_back(Wave.front());
        Wave.pop_front();
      }
      if (!Block.Samples.empty()) {
        Heard.push_back(Block);
      }
      NextPullWallS += static_cast<double>(kMixerPull) / kRate;
    }
  }

  // The encoded sample at the loudspeaker at WallS, 0 when silent.
  int16_t ValueAt(double WallS) const {
    for (auto It = Heard.rbegin(); It != Heard.rend(); ++It) {
      const double Offset = (WallS - It->FromWallS) * kRate;
      if (Offset >= 0.0 && Offset < static_cast<double>(It->Samples.size())) {
        return It->Samples[static_cast<size_t>(Offset)];
      }
      if (WallS > It->FromWallS + static_cast<double>(It->Samples.size()) / kRate) {
        return 0;
      }
    }
    return 0;
  }

  std::vector<int16_t> AllHeard() const {
    std::vector<int16_t> All;
    for (const FHeardBlock& Block : Heard) {
      All.insert(All.end(), Block.Samples.begin(), Block.Samples.end());
    }
    return All;
  }

  double LastHeardEndWallS() const {
    return Heard.empty() ? 0.0 : Heard.back().FromWallS + static_cast<double>(Heard.back().Samples.size()) / kRate;
  }
};

// Stream position of an encoded value, taking the candidate nearest to NearFrame.
int64_t Decode(int16_t Value, int64_t NearFrame) {
  const int64_t Residue = static_cast<int64_t>(static_cast<uint16_t>(Value)) - 1;
  const int64_t Base = NearFrame - ((NearFrame - Residue) % kCodePeriod + kCodePeriod) % kCodePeriod;
  return (NearFrame - Base <= kCodePeriod / 2) ? Base : Base + kCodePeriod;
}

struct FTickRecord {
  double WallS;
  AvatarLink::FPlaybackOutput Out;
  double HeardTimeS;  // audio-clock time at the loudspeaker; negative when silent
};

struct FRun {
  std::vector<FTickRecord> Ticks;
  FMixer Mixer;
  int Restarts = 0;
  int64_t LastTakenAtRestart = -1;
  int64_t NearFrame = 0;
};

// Runs the playback against the server's events until EndWallS; Interrupt optionally delivers a turn end whose
// stop_s is computed at delivery time from what is being heard.
FRun Simulate(FServer& Server, double EndWallS, AvatarLink::FAvatarPlayback& Playback,
              double InterruptWallS = -1.0, const std::string& InterruptId = "", double InterruptAfterHeardS = 0.0) {
  FRun Run;
  std::stable_sort(Server.Events.begin(), Server.Events.end(),
                   [](const FTimedEvent& A, const FTimedEvent& B) { return A.DeliverWallS < B.DeliverWallS; });
  size_t Next = 0;
  bool bInterrupted = false;
  for (double Wall = 0.0; Wall <= EndWallS; Wall += kTickS) {
    while (Next < Server.Events.size() && Server.Events[Next].DeliverWallS <= Wall) {
      Playback.OnEvent(Server.Events[Next].Event, Wall);
      ++Next;
    }
    Run.Mixer.Advance(Wall);
    const int16_t Heard = Run.Mixer.ValueAt(Wall);
    double HeardTimeS = -1.0;
    if (Heard != 0) {
      Run.NearFrame = Decode(Heard, Run.NearFrame);
      HeardTimeS = static_cast<double>(Run.NearFrame) / kRate;
    }
    if (!bInterrupted && InterruptWallS >= 0.0 && Wall >= InterruptWallS) {
      bInterrupted = true;
      AvatarStreamEvent End;
      End.kind = AvatarEventKind::kTurnEnd;
      End.turn_id = InterruptId;
      End.turn_end.reason = avatarlink::TurnEndReason::kInterrupted;
      End.turn_end.stop_s = HeardTimeS + InterruptAfterHeardS;
      End.time_s = End.turn_end.stop_s;
      Playback.OnEvent(End, Wall);
    }
    FTickRecord Record;
    Record.WallS = Wall;
    Record.HeardTimeS = HeardTimeS;
    Playback.Tick(Wall, static_cast<int64_t>(Run.Mixer.Wave.size()), 0.0, Record.Out);
    if (Record.Out.bRestartVoice) {
      ++Run.Restarts;
      if (!Run.Mixer.Heard.empty() && !Run.Mixer.Heard.back().Samples.empty()) {
        Run.LastTakenAtRestart = Decode(Run.Mixer.Heard.back().Samples.back(), Run.NearFrame);
      }
      Run.Mixer.Wave.clear();
    }
    Run.Mixer.Wave.insert(Run.Mixer.Wave.end(), Record.Out.VoiceToQueue.begin(), Record.Out.VoiceToQueue.end());
    Run.Ticks.push_back(std::move(Record));
  }
  return Run;
}

AvatarLink::FAvatarPlayback MakePlayback() {
  AvatarLink::FPlaybackSettings Settings;
  Settings.OutputLatencyS = kLatencyS;
  return AvatarLink::FAvatarPlayback(Settings);
}

// The heard samples decoded to stream positions.
std::vector<int64_t> HeardFrames(const FRun& Run, int64_t NearFrame) {
  std::vector<int64_t> Frames;
  for (int16_t Value : Run.Mixer.AllHeard()) {
    NearFrame = Decode(Value, NearFrame);
    Frames.push_back(NearFrame);
  }
  return Frames;
}

// Every heard sample follows the previous one, except at the given jumps (turn boundaries).
int CountDiscontinuities(const std::vector<int64_t>& Frames) {
  int Count = 0;
  for (size_t Index = 1; Index < Frames.size(); ++Index) {
    Count += Frames[Index] != Frames[Index - 1] + 1 ? 1 : 0;
  }
  return Count;
}

struct FSyncError {
  double MaxS = 0.0;
  double MeanS = 0.0;
  int Ticks = 0;
};

// |face time - heard time| over the ticks where the face plays and a voiced sample is heard.
FSyncError SyncError(const FRun& Run) {
  FSyncError Result;
  double Sum = 0.0;
  for (const FTickRecord& Tick : Run.Ticks) {
    if (Tick.Out.bFaceActive && Tick.HeardTimeS >= 0.0) {
      const double Error = std::fabs(Tick.Out.Pose.time_s - Tick.HeardTimeS);
      Result.MaxS = std::max(Result.MaxS, Error);
      Sum += Error;
      ++Result.Ticks;
    }
  }
  Result.MeanS = Result.Ticks > 0 ? Sum / Result.Ticks : 0.0;
  return Result;
}

// The playout clock only knows the loudspeaker is within the mixer's last pull (plus a tick of observation);
// on average it must do much better, or its latency model is off.
const double kSyncToleranceS = static_cast<double>(kMixerPull) / kRate + kTickS;
const double kMeanSyncToleranceS = 0.02;

void TestOneTurnPlaysEverySampleInSync() {
  FServer Server;
  Server.Header();
  Server.Turn("t1", 0.3, 2.3);
  Server.Emotion("t1", 1.3);
  Server.TurnEnd("t1", avatarlink::TurnEndReason::kCompleted, 2.3, FServer::Deliver(2.3));
  AvatarLink::FAvatarPlayback Playback = MakePlayback();
  FRun Run = Simulate(Server, 5.0, Playback);

  const std::vector<int64_t> Frames = HeardFrames(Run, std::llround(0.3 * kRate));
  CHECK(!Frames.empty());
  if (Frames.empty()) {
    return;
  }
  CHECK(Frames.front() == std::llround(0.3 * kRate));
  CHECK(Frames.back() == std::llround(2.3 * kRate) - 1);
  CHECK(CountDiscontinuities(Frames) == 0);
  CHECK(Run.Restarts == 0);

  const FSyncError Sync = SyncError(Run);
  std::printf("  one turn: |face - heard| max %.4f s, mean %.4f s over %d ticks\n", Sync.MaxS, Sync.MeanS, Sync.Ticks);
  CHECK(Sync.Ticks > 100);
  CHECK(Sync.MaxS <= kSyncToleranceS);
  CHECK(Sync.MeanS <= kMeanSyncToleranceS);

  int Commands = 0;
  int TurnEnds = 0;
  for (const FTickRecord& Tick : Run.Ticks) {
    for (const AvatarStreamEvent& Command : Tick.Out.Commands) {
      ++Commands;
      CHECK(Command.kind == AvatarEventKind::kEmotion);
      CHECK_NEAR(Tick.HeardTimeS, 1.3, kSyncToleranceS);
    }
    for (const AvatarLink::FTurnEnded& Ended : Tick.Out.TurnsEnded) {
      ++TurnEnds;
      CHECK(Ended.TurnId == "t1");
      CHECK(Ended.Reason == avatarlink::TurnEndReason::kCompleted);
      CHECK_NEAR(Tick.WallS, Run.Mixer.LastHeardEndWallS(), kSyncToleranceS);
    }
    // the face carries the frames' values: jawOpen is frac(t) on the frames, linear in between
    const double Fraction = Tick.Out.Pose.time_s - std::floor(Tick.Out.Pose.time_s);
    if (Tick.Out.bFaceActive && Fraction > 0.05 && Fraction < 0.95) {
      CHECK_NEAR(Tick.Out.Pose.weights[static_cast<size_t>(kJawOpen)], Fraction, 1e-3);
    }
  }
  CHECK(Commands == 1);
  CHECK(TurnEnds == 1);

  // before the voice the face rests; long after it, it has eased back to rest
  CHECK(!Run.Ticks.front().Out.bFaceActive);
  CHECK(!Run.Ticks.back().Out.bFaceActive);
  CHECK(Run.Ticks.back().Out.Pose.weights[static_cast<size_t>(kJawOpen)] < 0.01f);
  CHECK(std::fabs(Run.Ticks.back().Out.Pose.head_yaw_deg) < 0.05f);
}

void TestInterruptDropsVoicePastStop() {
  FServer Server;
  Server.Header();
  // the server stops sending when the interrupt takes effect (wall 1.2)
  Server.Turn("t1", 0.2, 3.2, /*CutWallS*/ 1.2);
  AvatarLink::FAvatarPlayback Playback = MakePlayback();
  // stop_s a little after what is heard at the interrupt: earlier than the voice already queued on the wave
  FRun Run = Simulate(Server, 3.0, Playback, /*InterruptWallS*/ 1.2, "t1", /*InterruptAfterHeardS*/ 0.06);

  double StopS = -1.0;
  for (const FTickRecord& Tick : Run.Ticks) {
    if (Tick.WallS >= 1.2 && StopS < 0.0) {
      StopS = Tick.HeardTimeS + 0.06;
    }
  }
  const std::vector<int64_t> Frames = HeardFrames(Run, std::llround(0.2 * kRate));
  CHECK(!Frames.empty());
  if (Frames.empty()) {
    return;
  }
  const int64_t StopFrame = static_cast<int64_t>(std::floor(StopS * kRate + 1e-6));
  std::printf("  interrupt: stop at frame %lld, last heard %lld, taken before the cut %lld\n",
              static_cast<long long>(StopFrame), static_cast<long long>(Frames.back()),
              static_cast<long long>(Run.LastTakenAtRestart));
  CHECK(Run.Restarts == 1);
  CHECK(CountDiscontinuities(Frames) == 0);  // nothing skipped before stop_s, nothing heard twice
  CHECK(Frames.back() >= StopFrame - 1);     // everything before stop_s was heard
  // past stop_s only what the mixer had already taken before the cut
  CHECK(Frames.back() <= std::max(StopFrame - 1, Run.LastTakenAtRestart));

  int TurnEnds = 0;
  for (const FTickRecord& Tick : Run.Ticks) {
    for (const AvatarLink::FTurnEnded& Ended : Tick.Out.TurnsEnded) {
      ++TurnEnds;
      CHECK(Ended.Reason == avatarlink::TurnEndReason::kInterrupted);
      CHECK(Tick.WallS + kSyncToleranceS >= Run.Mixer.LastHeardEndWallS());
    }
  }
  CHECK(TurnEnds == 1);
  CHECK(!Run.Ticks.back().Out.bFaceActive);
}

void TestTwoTurnsWithGapAndLateAudio() {
  FServer Server;
  Server.Header();
  Server.Turn("a", 0.2, 1.2);
  Server.TurnEnd("a", avatarlink::TurnEndReason::kCompleted, 1.2, FServer::Deliver(1.2));
  // turn b's data from 2.4 on arrives 0.4 s late (the stream is ordered: one late message holds back all that
  // follow): the voice runs dry and stalls, and the face must wait with it
  Server.Turn("b", 2.0, 3.0, 1e9, 2.4, 1e9, 0.4);
  Server.TurnEnd("b", avatarlink::TurnEndReason::kCompleted, 3.0, FServer::Deliver(3.0) + 0.4);
  AvatarLink::FAvatarPlayback Playback = MakePlayback();
  FRun Run = Simulate(Server, 6.0, Playback);

  const std::vector<int64_t> Frames = HeardFrames(Run, std::llround(0.2 * kRate));
  CHECK(!Frames.empty());
  if (Frames.empty()) {
    return;
  }
  CHECK(Frames.front() == std::llround(0.2 * kRate));
  CHECK(Frames.back() == std::llround(3.0 * kRate) - 1);
  CHECK(CountDiscontinuities(Frames) == 1);  // only the jump from turn a to turn b
  const FSyncError Sync = SyncError(Run);
  std::printf("  two turns with a stall: |face - heard| max %.4f s, mean %.4f s over %d ticks\n", Sync.MaxS, Sync.MeanS,
              Sync.Ticks);
  CHECK(Sync.Ticks > 80);
  CHECK(Sync.MaxS <= kSyncToleranceS);
  CHECK(Sync.MeanS <= kMeanSyncToleranceS);

  // the face never runs ahead of the voice during the stall
  double NewestHeardS = 0.0;
  bool bRestedBetween = false;
  for (const FTickRecord& Tick : Run.Ticks) {
    NewestHeardS = std::max(NewestHeardS, Tick.HeardTimeS);
    if (Tick.Out.bFaceActive) {
      CHECK(Tick.Out.Pose.time_s <= NewestHeardS + kSyncToleranceS);
    }
    if (Tick.HeardTimeS < 0.0 && NewestHeardS > 1.0 && NewestHeardS < 1.3 && !Tick.Out.bFaceActive) {
      bRestedBetween = true;
    }
  }
  CHECK(bRestedBetween);

  std::vector<std::string> Ended;
  for (const FTickRecord& Tick : Run.Ticks) {
    for (const AvatarLink::FTurnEnded& Turn : Tick.Out.TurnsEnded) {
      Ended.push_back(Turn.TurnId);
    }
  }
  CHECK(Ended.size() == 2 && Ended[0] == "a" && Ended[1] == "b");
}

void TestTurnWithoutVoiceAndStrayEvents() {
  FServer Server;
  Server.Header();
  // a turn that only changes the scene and ends without voice (e.g. a failed turn)
  AvatarStreamEvent Scene;
  Scene.kind = AvatarEventKind::kEnvironment;
  Scene.turn_id = "quiet";
  Scene.time_s = 0.5;
  Scene.environment.scene = avatarlink::SceneKind::kMusicStudio;
  Server.Events.push_back({FServer::Deliver(0.5), Scene});
  Server.TurnEnd("quiet", avatarlink::TurnEndReason::kFailed, 0.5, FServer::Deliver(0.5));
  // a face message of the ended turn arriving afterwards must not open a turn that never ends
  AvatarStreamEvent Stray;
  Stray.kind = AvatarEventKind::kFace;
  Stray.turn_id = "quiet";
  avatarlink::FaceFrame Frame;
  Frame.time_s = 0.55;
  Stray.frames.push_back(Frame);
  Server.Events.push_back({FServer::Deliver(0.5) + 0.1, Stray});
  // then a voiced turn, which must still play and end
  Server.Turn("next", 1.0, 1.5);
  Server.TurnEnd("next", avatarlink::TurnEndReason::kCompleted, 1.5, FServer::Deliver(1.5));
  AvatarLink::FAvatarPlayback Playback = MakePlayback();
  FRun Run = Simulate(Server, 3.0, Playback);

  double SceneWallS = -1.0;
  std::vector<std::string> Ended;
  for (const FTickRecord& Tick : Run.Ticks) {
    for (const AvatarStreamEvent& Command : Tick.Out.Commands) {
      CHECK(Command.kind == AvatarEventKind::kEnvironment);
      SceneWallS = Tick.WallS;
    }
    for (const AvatarLink::FTurnEnded& Turn : Tick.Out.TurnsEnded) {
      Ended.push_back(Turn.TurnId);
    }
  }
  // no voice to wait for: it fires lead_s + the command timeout after it arrived
  CHECK_NEAR(SceneWallS, FServer::Deliver(0.5) + kLeadS + 0.5, 2 * kTickS);
  CHECK(Ended.size() == 2 && Ended[0] == "quiet" && Ended[1] == "next");
  const std::vector<int64_t> Frames = HeardFrames(Run, std::llround(1.0 * kRate));
  CHECK(!Frames.empty() && CountDiscontinuities(Frames) == 0 && Frames.back() == std::llround(1.5 * kRate) - 1);
}

void TestNewHeaderResetsTheStream() {
  AvatarLink::FAvatarPlayback Playback = MakePlayback();
  FServer Server;
  Server.Header();
  Server.Turn("t1", 0.2, 1.0);
  std::stable_sort(Server.Events.begin(), Server.Events.end(),
                   [](const FTimedEvent& A, const FTimedEvent& B) { return A.DeliverWallS < B.DeliverWallS; });
  for (const FTimedEvent& Timed : Server.Events) {
    Playback.OnEvent(Timed.Event, Timed.DeliverWallS);
  }
  CHECK(Playback.HasHeader());
  CHECK(Playback.ConsumeNewHeader());
  CHECK(!Playback.ConsumeNewHeader());
  // a reconnect: the turn in flight is abandoned and reported, the next header starts over
  const std::vector<std::string> Abandoned = Playback.Reset();
  CHECK(Abandoned.size() == 1 && Abandoned[0] == "t1");
  CHECK(!Playback.HasHeader());
  Playback.OnEvent(Server.Events.front().Event, 10.0);
  CHECK(Playback.ConsumeNewHeader());
  AvatarLink::FPlaybackOutput Out;
  Playback.Tick(10.0, 0, 0.0, Out);
  CHECK(Out.VoiceToQueue.empty());
  CHECK(Out.TurnsEnded.empty());
}

}  // namespace

int main() {
  struct {
    const char* Name;
    void (*Run)();
  } const Tests[] = {
      {"one_turn_plays_every_sample_in_sync", TestOneTurnPlaysEverySampleInSync},
      {"interrupt_drops_voice_past_stop", TestInterruptDropsVoicePastStop},
      {"two_turns_with_gap_and_late_audio", TestTwoTurnsWithGapAndLateAudio},
      {"turn_without_voice_and_stray_events", TestTurnWithoutVoiceAndStrayEvents},
      {"new_header_resets_the_stream", TestNewHeaderResetsTheStream},
  };
  int FailedTests = 0;
  for (const auto& Test : Tests) {
    const int Before = Failures;
    FailuresShown = 0;
    Test.Run();
    const bool bPassed = Failures == Before;
    FailedTests += bPassed ? 0 : 1;
    std::printf("%s %s\n", bPassed ? "PASS" : "FAIL", Test.Name);
  }
  std::printf("%d checks, %d failed, %d of %zu tests failed\n", Checks, Failures, FailedTests,
              sizeof(Tests) / sizeof(Tests[0]));
  return FailedTests == 0 ? 0 : 1;
}
