// FAvatarPlayback: the avatar stream played against the voice's audio clock, with no Unreal types, so that the
// same code runs in the engine (UBT compiles AvatarPlayback.cpp, driven by UAvatarLinkSubsystem) and in a host test
// (HostTests/, built with g++ by tests/test_unreal_plugin.py).
//
// In: decoded avatar events (AvatarLinkCore's AvatarStreamEvent) as they arrive, and once per game tick the wall
// time and how many queued voice samples the mixer has not taken yet (USoundWaveProcedural's
// GetAvailableAudioByteCount / 2). Out, per tick: PCM to queue on the voice wave (and whether to start a new wave
// first), the face pose for Live Link, the commands whose time has come, and the turns whose voice has finished.
//
// The audio clock is the master. A turn's voice is one contiguous segment of samples; once a segment starts, the
// playout time is where the loudspeaker is inside it: time_of(samples taken by the mixer) minus the output latency,
// kept between the bounds the mixer's bursty pulls allow and advanced with the wall clock in between (see
// FPlayoutClock). Face frames, visemes and commands are sampled at that time, so they follow the voice even when
// the voice stalls (late data) or the sound card's clock drifts from the server's. Between turns the clock rests at
// the end of the last segment and the face eases to rest; each turn re-anchors at its first audio's start_s.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

// Inside Unreal the core's headers are third-party code (the core is checked by its own CMake build, with its own
// warning set); the macros exist only there.
#ifdef THIRD_PARTY_INCLUDES_START
THIRD_PARTY_INCLUDES_START
#endif
#include "AvatarTypes.h"
#include "FaceInterpolation.h"
#include "JitterBuffer.h"
#include "VisemeBlender.h"
#ifdef THIRD_PARTY_INCLUDES_END
THIRD_PARTY_INCLUDES_END
#endif

namespace AvatarLink {

struct FPlaybackSettings {
  // How much voice to keep queued on the wave ahead of the mixer. Small keeps an interrupt's cut cheap; it must
  // cover a game-thread hitch (a tick that comes late).
  double QueueAheadS = 0.1;
  // A turn's voice starts once this much of it (and at least the header's lead_s) has arrived, or the turn ended.
  double MinPrebufferS = 0.1;
  // ... or once its first audio is this old (wall time) whatever has arrived: a slow server must not mute the turn.
  double MaxPrebufferWaitS = 1.0;
  // Loudspeaker delay behind the samples the mixer took (mixer buffers + device). Tune on the target machine.
  double OutputLatencyS = 0.05;
  // Time constant of the face's ease to rest between turns.
  double RestBlendS = 0.3;
  // A command waits for its time on the audio clock; without any voice to wait for, it fires after lead_s + this.
  double CommandTimeoutS = 0.5;
  // Mouth (jaw*, mouth*, tongue*) from the Viseme events instead of the server's face frames.
  bool bMouthFromVisemes = false;
  avatarlink::InterpolationMode Interpolation = avatarlink::InterpolationMode::kLinear;
};

// The avatar's end of a turn, reported when its voice has finished playing (or at once for a turn without voice).
struct FTurnEnded {
  std::string TurnId;
  avatarlink::TurnEndReason Reason = avatarlink::TurnEndReason::kUnspecified;
  std::string Detail;
  double StopS = 0.0;
};

struct FPlaybackOutput {
  // Stop the voice wave and start an empty one before queueing VoiceToQueue (after an interrupt's cut).
  bool bRestartVoice = false;
  // Mono PCM16 at the header's rate, to append to the voice wave.
  std::vector<int16_t> VoiceToQueue;
  // The pose to publish now (52 ARKit weights in kArkitNames order, head angles in degrees).
  avatarlink::FaceFrame Pose;
  // A turn's face is playing (false: resting between turns).
  bool bFaceActive = false;
  // Emotion, gesture, camera and environment events whose time has come, in stream order.
  std::vector<avatarlink::AvatarStreamEvent> Commands;
  std::vector<FTurnEnded> TurnsEnded;

  void Clear();
};

// Maps the voice's sample positions (counted over the whole stream, across wave restarts) to the audio clock.
class FPlayoutClock {
 public:
  void Reset(uint32_t SampleRateHz, double OutputLatencyS);

  // The next queued sample starts a segment at StartS on the audio clock.
  void BeginSegment(double StartS);
  void AddQueued(int64_t Frames);
  // Drops queued samples from StopFrame on (an interrupt) and makes the next sample NextFrame (>= StopFrame when
  // the mixer had already taken samples past the cut: they are skipped, not replayed).
  void Truncate(int64_t StopFrame, int64_t NextFrame);

  // Audio-clock time of sample Frame: inside a segment its time, between segments the previous segment's end.
  double TimeAt(int64_t Frame) const;
  int64_t QueuedFrames() const { return TotalQueuedFrames; }

  // Advances the playout time: ConsumedFrames = samples the mixer has taken, bWaveEmpty = none left queued.
  double Update(int64_t ConsumedFrames, bool bWaveEmpty, double DeltaS);

  bool HasStarted() const { return bStarted; }
  double PlayoutS() const { return CurrentPlayoutS; }
  // The playout time lies inside a segment's voice (before its end: a played-out or starved segment rests).
  bool InsideSegment() const;
  // The largest pull of the mixer seen recently, in seconds (the width of the playout bounds).
  double PullS() const { return MaxPullS; }

 private:
  struct FSegment {
    int64_t FirstFrame = 0;
    double StartS = 0.0;
    int64_t Frames = 0;
  };

  double Rate = 0.0;
  double LatencyS = 0.0;
  std::vector<FSegment> Segments;  // increasing FirstFrame and StartS; only the last one grows
  int64_t TotalQueuedFrames = 0;
  int64_t LastConsumed = 0;
  bool bStarted = false;
  double CurrentPlayoutS = 0.0;
  double MaxPullS = 0.0;
};

class FAvatarPlayback {
 public:
  explicit FAvatarPlayback(const FPlaybackSettings& InSettings = FPlaybackSettings());

  void SetSettings(const FPlaybackSettings& InSettings) { Settings = InSettings; }

  // A new Converse call: forgets the stream. Turns still in flight are returned (their end will never come).
  std::vector<std::string> Reset();

  // Feeds one decoded avatar event; NowS is the wall clock (any origin, seconds). A header resets the playback
  // (a new stream's clock starts at 0) and asks for a new voice wave at its sample rate.
  void OnEvent(const avatarlink::AvatarStreamEvent& Event, double NowS);

  // One game tick. WaveAvailableFrames: samples queued on the current voice wave that the mixer has not taken.
  // FaceLeadS: how far ahead of the playout time to sample the face (Live Link shows a pose one engine frame later).
  void Tick(double NowS, int64_t WaveAvailableFrames, double FaceLeadS, FPlaybackOutput& Out);

  bool HasHeader() const { return bHasHeader; }
  const avatarlink::StreamHeader& Header() const { return HeaderData; }
  // A header arrived since the last call: the voice wave must be (re)created at Header().audio_sample_rate_hz.
  bool ConsumeNewHeader();
  double PlayoutS() const { return Clock.PlayoutS(); }
  const avatarlink::JitterStats& Stats() const { return Buffer.Stats(); }
  uint64_t VoiceRestarts() const { return VoiceRestartCount; }
  uint64_t DroppedAudioBlocks() const { return DroppedAudioBlockCount; }

 private:
  struct FTurn {
    std::string Id;
    bool bHasAudio = false;
    double FirstStartS = 0.0;
    double ReceivedEndS = 0.0;
    double FirstAudioWallS = 0.0;
    bool bEnded = false;
    double StopS = 0.0;
    avatarlink::TurnEndReason Reason = avatarlink::TurnEndReason::kUnspecified;
    std::string Detail;
    bool bNeedsCut = false;
    bool bSegmentOpen = false;
    bool bFullyQueued = false;
    int64_t SegmentFirstFrame = 0;
    int64_t SegmentFrames = 0;
  };

  struct FPendingCommand {
    avatarlink::AvatarStreamEvent Event;
    double ArrivalWallS = 0.0;
  };

  // The turn with this id, created on its first event; nullptr for a turn that already played out.
  FTurn* TurnFor(const std::string& TurnId);
  int64_t FramesUntil(const FTurn& Turn, double TimeS) const;
  void CutQueuedVoice(FTurn& Turn, int64_t ConsumedFrame, FPlaybackOutput& Out);
  void OpenNextSegment(double NowS);
  void QueueVoice(int64_t WaveAvailableFrames, FPlaybackOutput& Out);
  void TrimUnconsumed(int64_t ConsumedFrame);
  void FireCommands(double NowS, FPlaybackOutput& Out);
  void FinishTurns(FPlaybackOutput& Out);
  void ComputePose(double DeltaS, double FaceLeadS, FPlaybackOutput& Out);

  FPlaybackSettings Settings;
  bool bHasHeader = false;
  bool bNewHeader = false;
  avatarlink::StreamHeader HeaderData;
  uint32_t SampleRate = 0;

  avatarlink::JitterBuffer Buffer;
  avatarlink::VisemeBlender Visemes;
  FPlayoutClock Clock;
  std::deque<FTurn> Turns;  // in stream order; the front one plays (or waits) first
  std::deque<std::string> FinishedTurnIds;
  std::deque<FPendingCommand> PendingCommands;

  // The current voice wave: sample index (over the stream) of its first sample, and how many were queued on it.
  int64_t WaveFirstFrame = 0;
  int64_t WaveQueuedFrames = 0;
  // Copy of the queued samples the mixer has not taken, from UnconsumedFirstFrame on: an interrupt requeues the
  // part before its stop_s on a fresh wave (USoundWaveProcedural can only drop everything it holds).
  std::deque<int16_t> Unconsumed;
  int64_t UnconsumedFirstFrame = 0;

  bool bHasLastTick = false;
  double LastTickS = 0.0;
  avatarlink::FaceFrame RestPose;  // the pose held and eased to rest between turns
  std::vector<int> MouthIndices;   // kArkitNames indices of jaw*, mouth*, tongue*
  uint64_t VoiceRestartCount = 0;
  uint64_t DroppedAudioBlockCount = 0;
};

}  // namespace AvatarLink
