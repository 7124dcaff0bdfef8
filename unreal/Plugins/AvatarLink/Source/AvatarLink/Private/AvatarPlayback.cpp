// No Unreal includes: UBT compiles this file into the module, and HostTests/ compiles it with g++ (see the header).
#include "AvatarPlayback.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>

namespace AvatarLink {

namespace {

// Times on the audio clock are sums of k / rate; equal within this is equal.
constexpr double kTimeEpsilonS = 1e-6;
// Bounds of the mixer's pull size estimate: below, two ticks' difference is noise; above, a hitch or a stall.
constexpr double kMinPullS = 0.005;
constexpr double kMaxPullS = 0.25;
// The pull estimate forgets an old maximum with this time constant (the device's buffer size can change).
constexpr double kPullMemoryS = 5.0;
// Turn ids remembered after their end, so that a stray late event cannot open a turn that never ends.
constexpr size_t kFinishedTurnMemory = 16;

bool IsMouthName(const char* Name) {
  return std::strncmp(Name, "jaw", 3) == 0 || std::strncmp(Name, "mouth", 5) == 0 ||
         std::strncmp(Name, "tongue", 6) == 0;
}

}  // namespace

void FPlaybackOutput::Clear() {
  bRestartVoice = false;
  VoiceToQueue.clear();
  Pose = avatarlink::FaceFrame();
  bFaceActive = false;
  Commands.clear();
  TurnsEnded.clear();
}

// --- FPlayoutClock ----------------------------------------------------------------------------------------------

void FPlayoutClock::Reset(uint32_t SampleRateHz, double OutputLatencyS) {
  Rate = static_cast<double>(SampleRateHz);
  LatencyS = std::max(0.0, OutputLatencyS);
  Segments.clear();
  TotalQueuedFrames = 0;
  LastConsumed = 0;
  bStarted = false;
  CurrentPlayoutS = 0.0;
  // USoundWaveProcedural hands the mixer 1024 samples per callback unless the device asks for other sizes; the
  // estimate adapts from the first pull on.
  MaxPullS = Rate > 0.0 ? std::clamp(1024.0 / Rate, kMinPullS, kMaxPullS) : kMinPullS;
}

void FPlayoutClock::BeginSegment(double StartS) {
  FSegment Segment;
  Segment.FirstFrame = TotalQueuedFrames;
  Segment.StartS = StartS;
  Segments.push_back(Segment);
}

void FPlayoutClock::AddQueued(int64_t Frames) {
  if (Frames <= 0 || Segments.empty()) {
    return;
  }
  Segments.back().Frames += Frames;
  TotalQueuedFrames += Frames;
}

void FPlayoutClock::Truncate(int64_t StopFrame, int64_t NextFrame) {
  while (!Segments.empty() && Segments.back().FirstFrame >= StopFrame && Segments.size() > 1) {
    Segments.pop_back();
  }
  if (!Segments.empty()) {
    FSegment& Last = Segments.back();
    Last.Frames = std::clamp<int64_t>(StopFrame - Last.FirstFrame, 0, Last.Frames);
  }
  TotalQueuedFrames = std::max(NextFrame, StopFrame);
}

double FPlayoutClock::TimeAt(int64_t Frame) const {
  if (Segments.empty() || Rate <= 0.0) {
    return 0.0;
  }
  if (Frame <= Segments.front().FirstFrame) {
    return Segments.front().StartS;
  }
  // Frame counts samples taken: it ends inside the last segment holding sample Frame - 1.
  auto After = std::upper_bound(Segments.begin(), Segments.end(), Frame - 1,
                                [](int64_t Value, const FSegment& Segment) { return Value < Segment.FirstFrame; });
  const FSegment& Segment = *std::prev(After);
  const int64_t Offset = std::min<int64_t>(Frame - Segment.FirstFrame, Segment.Frames);
  return Segment.StartS + static_cast<double>(Offset) / Rate;
}

double FPlayoutClock::Update(int64_t ConsumedFrames, bool bWaveEmpty, double DeltaS) {
  if (Segments.empty() || Rate <= 0.0) {
    return CurrentPlayoutS;
  }
  const int64_t Consumed = std::clamp<int64_t>(ConsumedFrames, LastConsumed, TotalQueuedFrames);
  MaxPullS = std::max(kMinPullS, MaxPullS * std::exp(-std::max(0.0, DeltaS) / kPullMemoryS));
  if (Consumed > LastConsumed) {
    const double PulledS = static_cast<double>(Consumed - LastConsumed) / Rate;
    MaxPullS = std::max(MaxPullS, std::min(PulledS, kMaxPullS));
  }
  LastConsumed = Consumed;
  if (!bStarted && Consumed <= Segments.front().FirstFrame) {
    return CurrentPlayoutS;  // the mixer has not taken the first sample yet
  }

  // The newest sample the mixer took is at Taken; the loudspeaker is LatencyS behind the moment it was taken,
  // and that moment lies within the last pull: so the loudspeaker is between Taken - Latency - Pull and
  // Taken - Latency. Once the wave ran empty the pipeline drains up to Taken itself.
  const double TakenS = TimeAt(Consumed);
  const double LowerS = TakenS - LatencyS - MaxPullS;
  const double UpperS = bWaveEmpty ? TakenS : std::max(LowerS, TakenS - LatencyS);
  if (!bStarted) {
    bStarted = true;
    CurrentPlayoutS = LowerS;
  } else {
    CurrentPlayoutS = std::clamp(CurrentPlayoutS + std::max(0.0, DeltaS), LowerS, UpperS);
  }

  // Segments wholly before the one being played are not needed any more.
  while (Segments.size() > 1 && Segments[1].FirstFrame < Consumed) {
    Segments.erase(Segments.begin());
  }
  return CurrentPlayoutS;
}

bool FPlayoutClock::InsideSegment() const {
  if (!bStarted || Rate <= 0.0) {
    return false;
  }
  for (const FSegment& Segment : Segments) {
    // The end is excluded: when the voice has played out (or stalls, waiting for data) the clock rests there.
    const double EndS = Segment.StartS + static_cast<double>(Segment.Frames) / Rate;
    if (CurrentPlayoutS >= Segment.StartS - kTimeEpsilonS && CurrentPlayoutS < EndS - kTimeEpsilonS) {
      return true;
    }
  }
  return false;
}

// --- FAvatarPlayback --------------------------------------------------------------------------------------------

FAvatarPlayback::FAvatarPlayback(const FPlaybackSettings& InSettings) : Settings(InSettings) {
  for (int Index = 0; Index < avatarlink::kNumBlendshapes; ++Index) {
    if (IsMouthName(avatarlink::kArkitNames[static_cast<size_t>(Index)])) {
      MouthIndices.push_back(Index);
    }
  }
}

std::vector<std::string> FAvatarPlayback::Reset() {
  std::vector<std::string> Abandoned;
  for (const FTurn& Turn : Turns) {
    Abandoned.push_back(Turn.Id);
  }
  Turns.clear();
  FinishedTurnIds.clear();
  PendingCommands.clear();
  Buffer = avatarlink::JitterBuffer();
  Visemes = avatarlink::VisemeBlender();
  bHasHeader = false;
  bNewHeader = false;
  HeaderData = avatarlink::StreamHeader();
  SampleRate = 0;
  Clock.Reset(0, Settings.OutputLatencyS);
  WaveFirstFrame = 0;
  WaveQueuedFrames = 0;
  Unconsumed.clear();
  UnconsumedFirstFrame = 0;
  // RestPose is kept: the face eases from wherever it was.
  return Abandoned;
}

bool FAvatarPlayback::ConsumeNewHeader() {
  const bool bResult = bNewHeader;
  bNewHeader = false;
  return bResult;
}

FAvatarPlayback::FTurn* FAvatarPlayback::TurnFor(const std::string& TurnId) {
  for (auto It = Turns.rbegin(); It != Turns.rend(); ++It) {
    if (It->Id == TurnId) {
      return &*It;
    }
  }
  if (std::find(FinishedTurnIds.begin(), FinishedTurnIds.end(), TurnId) != FinishedTurnIds.end()) {
    return nullptr;  // a late event of a turn already played out
  }
  FTurn Turn;
  Turn.Id = TurnId;
  Turns.push_back(Turn);
  return &Turns.back();
}

void FAvatarPlayback::OnEvent(const avatarlink::AvatarStreamEvent& Event, double NowS) {
  using avatarlink::AvatarEventKind;
  if (Event.kind == AvatarEventKind::kHeader) {
    Reset();
    HeaderData = Event.header;
    SampleRate = Event.header.audio_sample_rate_hz;
    Buffer.SetFps(static_cast<double>(Event.header.fps));
    Clock.Reset(SampleRate, Settings.OutputLatencyS);
    bHasHeader = SampleRate > 0;
    bNewHeader = bHasHeader;
    return;
  }
  if (!bHasHeader) {
    return;  // the decoder rejects events before the header; nothing can be timed without it
  }
  switch (Event.kind) {
    case AvatarEventKind::kAudio: {
      const avatarlink::AudioBlock& Block = Event.audio;
      FTurn* Turn = TurnFor(Event.turn_id);
      if (Turn == nullptr || Block.sample_rate_hz != SampleRate || Block.channels != 1 || Turn->bEnded ||
          Turn->bFullyQueued) {
        ++DroppedAudioBlockCount;  // the header's format is the wave's format; audio after the turn's end is void
        return;
      }
      if (!Turn->bHasAudio) {
        Turn->bHasAudio = true;
        Turn->FirstStartS = Block.start_s;
        Turn->ReceivedEndS = Block.start_s;
        Turn->FirstAudioWallS = NowS;
      }
      Turn->ReceivedEndS = std::max(Turn->ReceivedEndS, Block.EndS());
      Buffer.PushAudio(Block);
      return;
    }
    case AvatarEventKind::kFace:
      if (TurnFor(Event.turn_id) != nullptr) {
        Buffer.PushFrames(Event.frames);
      }
      return;
    case AvatarEventKind::kViseme:
      Visemes.Add(Event.viseme);
      return;
    case AvatarEventKind::kEmotion:
    case AvatarEventKind::kGesture:
    case AvatarEventKind::kCamera:
    case AvatarEventKind::kEnvironment: {
      FPendingCommand Command;
      Command.Event = Event;
      Command.ArrivalWallS = NowS;
      PendingCommands.push_back(std::move(Command));
      return;
    }
    case AvatarEventKind::kTurnEnd: {
      FTurn* Turn = TurnFor(Event.turn_id);
      if (Turn == nullptr || Turn->bEnded) {
        return;
      }
      const double StopS = Event.turn_end.stop_s;
      Turn->bEnded = true;
      Turn->StopS = StopS;
      Turn->Reason = Event.turn_end.reason;
      Turn->Detail = Event.turn_end.detail;
      Buffer.EndTurn(StopS);
      Visemes.Cut(StopS);
      // Whatever was meant to happen after stop_s never happens.
      PendingCommands.erase(std::remove_if(PendingCommands.begin(), PendingCommands.end(),
                                           [StopS](const FPendingCommand& Command) {
                                             return Command.Event.time_s > StopS + kTimeEpsilonS;
                                           }),
                            PendingCommands.end());
      if (Turn->bHasAudio) {
        Turn->ReceivedEndS = std::min(Turn->ReceivedEndS, StopS);
        const double QueuedEndS = Turn->FirstStartS + static_cast<double>(Turn->SegmentFrames) / SampleRate;
        Turn->bNeedsCut = Turn->bSegmentOpen && QueuedEndS > StopS + kTimeEpsilonS;
      }
      return;
    }
    default:
      return;
  }
}

int64_t FAvatarPlayback::FramesUntil(const FTurn& Turn, double TimeS) const {
  // floor with slack: stop_s equal to the end of the last chunk (start + n / rate) gives exactly n
  const double Frames = std::floor((TimeS - Turn.FirstStartS) * static_cast<double>(SampleRate) + 1e-6);
  return static_cast<int64_t>(std::max(0.0, Frames));
}

void FAvatarPlayback::TrimUnconsumed(int64_t ConsumedFrame) {
  const int64_t Drop = std::min<int64_t>(ConsumedFrame - UnconsumedFirstFrame, static_cast<int64_t>(Unconsumed.size()));
  if (Drop > 0) {
    Unconsumed.erase(Unconsumed.begin(), Unconsumed.begin() + Drop);
    UnconsumedFirstFrame += Drop;
  }
}

void FAvatarPlayback::CutQueuedVoice(FTurn& Turn, int64_t ConsumedFrame, FPlaybackOutput& Out) {
  Turn.bNeedsCut = false;
  const int64_t StopFrame = Turn.SegmentFirstFrame + std::min(FramesUntil(Turn, Turn.StopS), Turn.SegmentFrames);
  const int64_t QueuedEnd = Turn.SegmentFirstFrame + Turn.SegmentFrames;
  if (StopFrame >= QueuedEnd) {
    return;  // nothing past stop_s was queued: QueueVoice continues up to it
  }
  Turn.bFullyQueued = true;
  // The wave holds samples past stop_s and cannot drop only those: start a new wave with the samples the mixer
  // has not taken before stop_s. (ConsumedFrame was read at the start of the tick; the mixer may take one more
  // pull before the old wave stops, which is then heard twice: at most one pull, tens of milliseconds.)
  std::vector<int16_t> Keep;
  if (StopFrame > ConsumedFrame) {
    const auto From = Unconsumed.begin() + (ConsumedFrame - UnconsumedFirstFrame);
    const auto To = Unconsumed.begin() + (StopFrame - UnconsumedFirstFrame);
    Keep.assign(From, To);
  }
  Out.bRestartVoice = true;
  Out.VoiceToQueue = Keep;
  ++VoiceRestartCount;
  Clock.Truncate(StopFrame, std::max(StopFrame, ConsumedFrame));
  WaveFirstFrame = ConsumedFrame;
  WaveQueuedFrames = static_cast<int64_t>(Keep.size());
  Unconsumed.assign(Keep.begin(), Keep.end());
  UnconsumedFirstFrame = ConsumedFrame;
  Turn.SegmentFrames = StopFrame - Turn.SegmentFirstFrame;
}

void FAvatarPlayback::OpenNextSegment(double NowS) {
  const double PrebufferS = std::max(Settings.MinPrebufferS, HeaderData.lead_s);
  for (FTurn& Turn : Turns) {
    if (!Turn.bHasAudio) {
      if (Turn.bEnded) {
        continue;  // a turn without voice
      }
      return;  // its voice may still come: later turns wait
    }
    if (Turn.bFullyQueued) {
      continue;
    }
    if (Turn.bSegmentOpen) {
      return;
    }
    const bool bReady = Turn.bEnded || Turn.ReceivedEndS - Turn.FirstStartS >= PrebufferS - kTimeEpsilonS ||
                        NowS - Turn.FirstAudioWallS >= Settings.MaxPrebufferWaitS;
    if (bReady) {
      Clock.BeginSegment(Turn.FirstStartS);
      Turn.SegmentFirstFrame = Clock.QueuedFrames();
      Turn.bSegmentOpen = true;
    }
    return;
  }
}

void FAvatarPlayback::QueueVoice(int64_t WaveAvailableFrames, FPlaybackOutput& Out) {
  FTurn* Open = nullptr;
  for (FTurn& Turn : Turns) {
    if (Turn.bSegmentOpen && !Turn.bFullyQueued) {
      Open = &Turn;
      break;
    }
  }
  if (Open == nullptr) {
    return;
  }
  const int64_t LimitFrames = FramesUntil(*Open, Open->bEnded ? Open->StopS : Open->ReceivedEndS);
  const int64_t TargetFrames = static_cast<int64_t>(std::ceil(Settings.QueueAheadS * static_cast<double>(SampleRate)));
  const int64_t Frames = std::min(TargetFrames - WaveAvailableFrames, LimitFrames - Open->SegmentFrames);
  if (Frames > 0) {
    std::vector<int16_t> Pcm;
    const double FromS = Open->FirstStartS + static_cast<double>(Open->SegmentFrames) / SampleRate;
    Buffer.ReadAudio(FromS, static_cast<size_t>(Frames), Pcm);
    Out.VoiceToQueue.insert(Out.VoiceToQueue.end(), Pcm.begin(), Pcm.end());
    Unconsumed.insert(Unconsumed.end(), Pcm.begin(), Pcm.end());
    Open->SegmentFrames += Frames;
    WaveQueuedFrames += Frames;
    Clock.AddQueued(Frames);
  }
  if (Open->bEnded && Open->SegmentFrames >= LimitFrames) {
    Open->bFullyQueued = true;
  }
}

void FAvatarPlayback::FireCommands(double NowS, FPlaybackOutput& Out) {
  const double TimeoutS = HeaderData.lead_s + Settings.CommandTimeoutS;
  while (!PendingCommands.empty()) {
    const FPendingCommand& Command = PendingCommands.front();
    const bool bTimeCame = Clock.HasStarted() && Command.Event.time_s <= Clock.PlayoutS() + kTimeEpsilonS;
    // Turns only exist once avatar data of them arrived: with none pending there is no voice to wait for.
    const bool bNothingToWaitFor = Turns.empty() && NowS - Command.ArrivalWallS >= TimeoutS;
    if (!bTimeCame && !bNothingToWaitFor) {
      return;  // commands come in time order: the rest wait too
    }
    Out.Commands.push_back(Command.Event);
    PendingCommands.pop_front();
  }
}

void FAvatarPlayback::FinishTurns(FPlaybackOutput& Out) {
  while (!Turns.empty()) {
    const FTurn& Turn = Turns.front();
    if (!Turn.bEnded) {
      return;
    }
    bool bDone = true;
    if (Turn.bHasAudio && Turn.SegmentFrames > 0) {
      const double EndS = Turn.FirstStartS + static_cast<double>(Turn.SegmentFrames) / SampleRate;
      bDone = Turn.bFullyQueued && Clock.HasStarted() && Clock.PlayoutS() >= EndS - kTimeEpsilonS;
    } else if (Turn.bHasAudio) {
      bDone = Turn.bFullyQueued;  // cut before any of it was queued
    }
    if (!bDone) {
      return;
    }
    FTurnEnded Ended;
    Ended.TurnId = Turn.Id;
    Ended.Reason = Turn.Reason;
    Ended.Detail = Turn.Detail;
    Ended.StopS = Turn.StopS;
    Out.TurnsEnded.push_back(std::move(Ended));
    FinishedTurnIds.push_back(Turn.Id);
    if (FinishedTurnIds.size() > kFinishedTurnMemory) {
      FinishedTurnIds.pop_front();
    }
    Turns.pop_front();
  }
}

void FAvatarPlayback::ComputePose(double DeltaS, double FaceLeadS, FPlaybackOutput& Out) {
  const bool bActive = bHasHeader && Clock.InsideSegment();
  if (bActive) {
    const double SampleS = Clock.PlayoutS() + std::max(0.0, FaceLeadS);
    avatarlink::FaceFrame Pose = Buffer.Pull(SampleS, Settings.Interpolation);
    if (Settings.bMouthFromVisemes) {
      const avatarlink::BlendshapeWeights Mouth = Visemes.Sample(SampleS);
      for (int Index : MouthIndices) {
        Pose.weights[static_cast<size_t>(Index)] = Mouth[static_cast<size_t>(Index)];
      }
    }
    RestPose = Pose;
  } else {
    // Ease every weight and head angle to zero: the MetaHuman's neutral face, looking ahead.
    const double Alpha = Settings.RestBlendS > 0.0 ? 1.0 - std::exp(-DeltaS / Settings.RestBlendS) : 1.0;
    const float Keep = static_cast<float>(1.0 - Alpha);
    for (float& Weight : RestPose.weights) {
      Weight *= Keep;
    }
    RestPose.head_pitch_deg *= Keep;
    RestPose.head_yaw_deg *= Keep;
    RestPose.head_roll_deg *= Keep;
    RestPose.time_s = Clock.PlayoutS();
  }
  Visemes.Prune(Clock.PlayoutS());
  Out.Pose = RestPose;
  Out.bFaceActive = bActive;
}

void FAvatarPlayback::Tick(double NowS, int64_t WaveAvailableFrames, double FaceLeadS, FPlaybackOutput& Out) {
  Out.Clear();
  const double DeltaS = bHasLastTick ? std::max(0.0, NowS - LastTickS) : 0.0;
  bHasLastTick = true;
  LastTickS = NowS;
  if (!bHasHeader) {
    ComputePose(DeltaS, FaceLeadS, Out);
    return;
  }

  const int64_t Available = std::clamp<int64_t>(WaveAvailableFrames, 0, WaveQueuedFrames);
  const int64_t Consumed = WaveFirstFrame + (WaveQueuedFrames - Available);
  TrimUnconsumed(Consumed);
  for (FTurn& Turn : Turns) {
    if (Turn.bNeedsCut) {
      CutQueuedVoice(Turn, Consumed, Out);
    }
  }
  OpenNextSegment(NowS);
  // what the mixer still has on the wave (after a cut: what was requeued on the new one)
  QueueVoice(WaveFirstFrame + WaveQueuedFrames - Consumed, Out);
  Clock.Update(Consumed, Available == 0, DeltaS);
  FireCommands(NowS, Out);
  FinishTurns(Out);
  ComputePose(DeltaS, FaceLeadS, Out);
}

}  // namespace AvatarLink
