// avatar_client: a plain C++ gRPC client of almquist.v1.Conversation/Converse that receives the avatar stream the
// way a game client does, minus rendering and sound, and reports what it saw as one JSON object on stdout.
//
//   avatar_client --target localhost:9000 --say "Hello there." [--say "..."] [--interrupt-after-s 0.5]
//
// (--application picks the Serve application, sent as gRPC metadata like almquist.client does; default
// "conversation")
//
// It opens Converse, sends SessionStart{avatar: true} and the --say turns one after another (the next once the
// previous turn's text TurnEnd arrived), feeds every ServerEvent through StreamDecoder into a JitterBuffer, and runs
// a playout clock on its own thread that pulls a pose from the buffer at the header's fps.
//
// The playout clock is the client's audio position: it starts at 0 when the header arrives and runs in real time,
// minus --playout-delay-s (default 0). No extra delay is needed: the server already sends every event lead_s ahead
// of its time on its clock, and the client's clock lags the server's by the one-way latency, so frames reach the
// buffer about lead_s early; any added delay would only make the avatar answer later and shift where an interrupt
// lands (the server stops the audio where ITS clock is when the interrupt arrives).
//
// --interrupt-after-s X sends ClientEvent{interrupt} X seconds (wall clock) after the first audio of each turn
// arrived, and records the playout clock at that moment; the report shows it next to the avatar TurnEnd's stop_s.
//
// Exit status: 0 when the stream was decoded without an error and ended normally; 1 on a decode error, an
// in-band ErrorEvent, a gRPC error, or a timeout; 2 on bad arguments.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "FaceInterpolation.h"
#include "JitterBuffer.h"
#include "JsonWriter.h"
#include "StreamDecoder.h"
#include "VisemeBlender.h"
#include "almquist/v1/conversation.grpc.pb.h"

namespace pb = almquist::v1;
using avatarlink::AvatarEventKind;
using avatarlink::AvatarStreamEvent;
using avatarlink::FaceFrame;
using avatarlink::JsonWriter;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr size_t kMaxDumpedBadEvents = 20;
constexpr size_t kInterpolationSamples = 5;

struct Options {
  std::string target;
  std::string application = "conversation";  // the Serve app the proxy routes to (gRPC metadata "application")
  std::string api_key;  // --api-key, else ALMQUIST_API_KEY, else the first line of the credentials file
  std::vector<std::string> says;
  double interrupt_after_s = -1.0;  // < 0: never
  double playout_delay_s = 0.0;
  double timeout_s = 180.0;
  double drain_s = 0.3;  // after the last turn, keep playing this long past its stop_s (drains without underruns)
  uint32_t max_tokens = 0;
  int dump_events = 0;  // print the first N ServerEvents to stderr
};

const char* kUsage =
    "usage: avatar_client --target HOST:PORT --say TEXT [--say TEXT ...] [--interrupt-after-s S]\n"
    "                     [--application NAME] [--api-key KEY] [--playout-delay-s S] [--timeout-s S] [--drain-s S]\n"
    "                     [--max-tokens N] [--dump-events N]\n";

// The credential the Python client would use: ALMQUIST_API_KEY, else the first line of ALMQUIST_CREDENTIALS (or
// ~/.almquist/credentials, which `almquist up` writes).
std::string StoredCredential() {
  if (const char* key = std::getenv("ALMQUIST_API_KEY"); key != nullptr && *key != '\0') return key;
  std::string path;
  if (const char* file = std::getenv("ALMQUIST_CREDENTIALS"); file != nullptr && *file != '\0') {
    path = file;
  } else if (const char* home = std::getenv("HOME"); home != nullptr) {
    path = std::string(home) + "/.almquist/credentials";
  }
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  return line;
}

bool ParseDouble(const char* text, double& value) {
  char* end = nullptr;
  value = std::strtod(text, &end);
  return end != text && *end == '\0' && std::isfinite(value);
}

bool ParseArgs(int argc, char** argv, Options& options, std::string& error) {
  for (int index = 1; index < argc; ++index) {
    const std::string flag = argv[index];
    if (flag == "--help" || flag == "-h") {
      error = "";
      return false;
    }
    if (index + 1 >= argc) {
      error = flag + " needs a value";
      return false;
    }
    const char* value = argv[++index];
    double number = 0.0;
    if (flag == "--target") {
      options.target = value;
    } else if (flag == "--application") {
      options.application = value;
    } else if (flag == "--api-key") {
      options.api_key = value;
    } else if (flag == "--say") {
      if (*value == '\0') {
        error = "--say needs a non-empty text";
        return false;
      }
      options.says.emplace_back(value);
    } else if (flag == "--interrupt-after-s" && ParseDouble(value, number) && number >= 0.0) {
      options.interrupt_after_s = number;
    } else if (flag == "--playout-delay-s" && ParseDouble(value, number) && number >= 0.0) {
      options.playout_delay_s = number;
    } else if (flag == "--timeout-s" && ParseDouble(value, number) && number > 0.0) {
      options.timeout_s = number;
    } else if (flag == "--drain-s" && ParseDouble(value, number) && number >= 0.0) {
      options.drain_s = number;
    } else if (flag == "--max-tokens" && ParseDouble(value, number) && number >= 0.0) {
      options.max_tokens = static_cast<uint32_t>(number);
    } else if (flag == "--dump-events" && ParseDouble(value, number) && number >= 0.0) {
      options.dump_events = static_cast<int>(number);
    } else {
      error = "bad option or value: " + flag + " " + value;
      return false;
    }
  }
  if (options.target.empty() || options.says.empty()) {
    error = "--target and at least one --say are required";
    return false;
  }
  return true;
}

struct CommandRecord {
  std::string kind;
  std::string value;
  std::string reason;
  std::string turn_id;
  double time_s = 0.0;
};

// What one turn looked like from the client.
struct TurnRecord {
  std::string turn_id;
  std::string user_text;
  std::string topic;
  std::string intent;
  std::string route;
  uint64_t tokens = 0;
  uint64_t face_events = 0;
  uint64_t face_frames = 0;
  uint64_t frames_after_stop = 0;
  uint64_t audio_chunks = 0;
  uint64_t audio_samples = 0;  // sample frames
  uint32_t sample_rate_hz = 0;
  uint64_t visemes = 0;
  std::map<std::string, uint64_t> commands;
  double first_frame_s = kNaN;
  double last_frame_s = kNaN;
  double first_audio_s = kNaN;
  double audio_end_s = kNaN;
  // event time - playout clock when audio or face events arrived: how far ahead the server sent
  double min_arrival_lead_s = kNaN;
  double max_arrival_lead_s = kNaN;
  bool interrupt_armed = false;
  SteadyClock::time_point interrupt_due;
  bool interrupt_sent = false;
  double interrupt_sent_clock_s = kNaN;
  bool have_avatar_end = false;
  avatarlink::TurnEndEvent avatar_end;
  double avatar_end_time_s = kNaN;
  double avatar_end_arrival_clock_s = kNaN;
  bool have_text_end = false;
  std::string text_end_reason;
  std::string text_end_detail;
  uint32_t text_end_tokens = 0;

  double AudioSeconds() const {
    return sample_rate_hz == 0 ? 0.0 : static_cast<double>(audio_samples) / static_cast<double>(sample_rate_hz);
  }
};

void UpdateRange(double value, double& low, double& high) {
  if (std::isnan(low) || value < low) {
    low = value;
  }
  if (std::isnan(high) || value > high) {
    high = value;
  }
}

class AvatarClient {
 public:
  explicit AvatarClient(Options options) : options_(std::move(options)) {}

  int Run();

 private:
  void ReadLoop();
  void PlayoutLoop();
  void HandleEvent(const pb::ServerEvent& event);  // with mutex_ held
  TurnRecord& Turn(const std::string& turn_id);    // with mutex_ held
  bool Write(const pb::ClientEvent& event);
  double ClockNow() const;  // playout clock (with mutex_ held or after the header)
  void CheckInterpolation(double t, const FaceFrame& pose);
  std::string Report(const grpc::Status& status, bool timed_out, bool cancelled_after_done) const;

  Options options_;
  std::unique_ptr<pb::Conversation::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::ClientEvent, pb::ServerEvent>> stream_;
  std::mutex write_mutex_;
  bool writes_done_ = false;  // guarded by write_mutex_

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool stream_ended_ = false;
  bool stop_playout_ = false;
  avatarlink::StreamDecoder decoder_;
  avatarlink::JitterBuffer buffer_;
  avatarlink::VisemeBlender visemes_;
  bool have_header_ = false;
  avatarlink::StreamHeader header_;
  SteadyClock::time_point header_arrival_;
  std::string session_id_;
  uint64_t server_events_ = 0;
  uint64_t avatar_events_ = 0;
  uint64_t text_turn_ends_ = 0;
  uint64_t avatar_turn_ends_ = 0;
  std::map<std::string, uint64_t> kind_counts_;
  std::vector<std::string> decode_errors_;
  uint64_t decode_error_count_ = 0;
  std::vector<std::string> server_errors_;
  std::vector<CommandRecord> commands_;
  std::vector<std::string> turn_order_;
  std::map<std::string, TurnRecord> turns_;
  std::vector<FaceFrame> frames_;  // every frame received and not cut, in time order: the interpolation reference
  int dumped_ = 0;
  size_t dumped_bad_ = 0;
  // playout
  uint64_t ticks_ = 0;
  uint64_t idle_ticks_ = 0;
  uint64_t interpolation_checks_ = 0;
  double interpolation_max_abs_diff_ = 0.0;
  struct InterpolationSample {
    double t;
    double a_s;
    double b_s;
    float buffer_jaw_open;
    double direct_jaw_open;
  };
  std::vector<InterpolationSample> interpolation_samples_;
  double max_viseme_jaw_open_ = 0.0;
  double last_clock_s_ = 0.0;
};

double AvatarClient::ClockNow() const {
  const std::chrono::duration<double> since = SteadyClock::now() - header_arrival_;
  return since.count() - options_.playout_delay_s;
}

bool AvatarClient::Write(const pb::ClientEvent& event) {
  std::lock_guard<std::mutex> lock(write_mutex_);
  return !writes_done_ && stream_->Write(event);  // gRPC forbids a Write after WritesDone
}

TurnRecord& AvatarClient::Turn(const std::string& turn_id) {
  auto found = turns_.find(turn_id);
  if (found == turns_.end()) {
    turn_order_.push_back(turn_id);
    found = turns_.emplace(turn_id, TurnRecord{}).first;
    found->second.turn_id = turn_id;
  }
  return found->second;
}

void AvatarClient::HandleEvent(const pb::ServerEvent& event) {
  ++server_events_;
  if (dumped_ < options_.dump_events) {
    ++dumped_;
    // arrival on the playout clock (before the header: -1), then the event
    std::fprintf(stderr, "event @%.4f: %s\n", have_header_ ? ClockNow() : -1.0,
                 event.ShortDebugString().substr(0, 600).c_str());
  }
  AvatarStreamEvent decoded;
  const avatarlink::DecodeStatus status = decoder_.Decode(event, decoded);
  if (!status.Ok()) {
    ++decode_error_count_;
    if (decode_errors_.size() < 50) {
      decode_errors_.push_back(status.error);
    }
    if (dumped_bad_ < kMaxDumpedBadEvents) {
      ++dumped_bad_;
      std::fprintf(stderr, "decode error: %s\n  event: %s\n", status.error.c_str(),
                   event.ShortDebugString().substr(0, 800).c_str());
    }
  }
  switch (event.event_case()) {
    case pb::ServerEvent::kSessionStarted:
      session_id_ = event.session_started().session_id();
      return;
    case pb::ServerEvent::kTurnStarted: {
      const pb::TurnStarted& started = event.turn_started();
      TurnRecord& turn = Turn(started.turn_id().empty() ? event.turn_id() : started.turn_id());
      turn.user_text = started.user_text();
      turn.topic = started.topic();
      turn.intent = started.intent();
      turn.route = started.route();
      return;
    }
    case pb::ServerEvent::kToken:
      ++Turn(event.turn_id()).tokens;
      return;
    case pb::ServerEvent::kTurnEnd: {
      TurnRecord& turn = Turn(event.turn_end().turn_id().empty() ? event.turn_id() : event.turn_end().turn_id());
      turn.have_text_end = true;
      turn.text_end_reason = pb::TurnEndReason_Name(event.turn_end().reason());
      turn.text_end_detail = event.turn_end().detail();
      turn.text_end_tokens = event.turn_end().tokens();
      turn.interrupt_armed = false;
      ++text_turn_ends_;
      changed_.notify_all();
      return;
    }
    case pb::ServerEvent::kError:
      server_errors_.push_back(std::to_string(event.error().code()) + ": " + event.error().message());
      return;
    case pb::ServerEvent::kAvatar:
      ++avatar_events_;
      break;
    default:
      return;
  }
  if (!status.has_event) {
    return;
  }
  ++kind_counts_[avatarlink::ToString(decoded.kind)];
  if (decoded.kind == AvatarEventKind::kHeader) {
    have_header_ = true;
    header_ = decoded.header;
    header_arrival_ = SteadyClock::now();
    buffer_.SetFps(static_cast<double>(header_.fps));
    changed_.notify_all();
    return;
  }
  const double clock_s = ClockNow();
  TurnRecord& turn = Turn(decoded.turn_id);
  switch (decoded.kind) {
    case AvatarEventKind::kAudio: {
      const avatarlink::AudioBlock& block = decoded.audio;
      if (turn.audio_chunks == 0 && options_.interrupt_after_s >= 0.0 && !turn.have_avatar_end) {
        turn.interrupt_armed = true;
        turn.interrupt_due =
            SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                     std::chrono::duration<double>(options_.interrupt_after_s));
        changed_.notify_all();
      }
      ++turn.audio_chunks;
      turn.audio_samples += block.SampleFrames();
      turn.sample_rate_hz = block.sample_rate_hz;
      if (std::isnan(turn.first_audio_s)) {
        turn.first_audio_s = block.start_s;
      }
      turn.audio_end_s = block.EndS();
      UpdateRange(block.start_s - clock_s, turn.min_arrival_lead_s, turn.max_arrival_lead_s);
      buffer_.PushAudio(block);
      break;
    }
    case AvatarEventKind::kFace: {
      ++turn.face_events;
      turn.face_frames += decoded.frames.size();
      if (std::isnan(turn.first_frame_s)) {
        turn.first_frame_s = decoded.frames.front().time_s;
      }
      turn.last_frame_s = decoded.frames.back().time_s;
      UpdateRange(decoded.frames.front().time_s - clock_s, turn.min_arrival_lead_s, turn.max_arrival_lead_s);
      buffer_.PushFrames(decoded.frames);
      frames_.insert(frames_.end(), decoded.frames.begin(), decoded.frames.end());
      break;
    }
    case AvatarEventKind::kViseme:
      ++turn.visemes;
      visemes_.Add(decoded.viseme);
      break;
    case AvatarEventKind::kEmotion:
    case AvatarEventKind::kGesture:
    case AvatarEventKind::kCamera:
    case AvatarEventKind::kEnvironment: {
      CommandRecord command;
      command.kind = avatarlink::ToString(decoded.kind);
      command.turn_id = decoded.turn_id;
      command.time_s = decoded.time_s;
      if (decoded.kind == AvatarEventKind::kEmotion) {
        command.value = avatarlink::ToString(decoded.emotion.kind);
      } else if (decoded.kind == AvatarEventKind::kGesture) {
        command.value = decoded.gesture.name;
      } else if (decoded.kind == AvatarEventKind::kCamera) {
        command.value = avatarlink::ToString(decoded.camera.shot);
        command.reason = decoded.camera.reason;
      } else {
        command.value = avatarlink::ToString(decoded.environment.scene);
        command.reason = decoded.environment.reason;
      }
      ++turn.commands[command.kind];
      commands_.push_back(command);
      break;
    }
    case AvatarEventKind::kTurnEnd: {
      const double stop_s = decoded.turn_end.stop_s;
      turn.have_avatar_end = true;
      turn.avatar_end = decoded.turn_end;
      turn.avatar_end_time_s = decoded.time_s;
      turn.avatar_end_arrival_clock_s = clock_s;
      turn.interrupt_armed = false;
      ++avatar_turn_ends_;
      buffer_.EndTurn(stop_s);
      visemes_.Cut(stop_s);
      // the reference drops the same frames the buffer dropped
      const auto cut = std::upper_bound(frames_.begin(), frames_.end(), stop_s + 1e-9,
                                        [](double time, const FaceFrame& frame) { return time < frame.time_s; });
      turn.frames_after_stop = static_cast<uint64_t>(frames_.end() - cut);
      frames_.erase(cut, frames_.end());
      changed_.notify_all();
      break;
    }
    case AvatarEventKind::kHeader:
    case AvatarEventKind::kNone:
      break;
  }
}

void AvatarClient::ReadLoop() {
  pb::ServerEvent event;
  while (stream_->Read(&event)) {
    std::lock_guard<std::mutex> lock(mutex_);
    HandleEvent(event);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stream_ended_ = true;
  changed_.notify_all();
}

// Compares the buffer's pose at t with the straight line between the two received frames around t, computed here
// from the client's own record of frames (the same set the buffer holds).
void AvatarClient::CheckInterpolation(double t, const FaceFrame& pose) {
  const auto after = std::upper_bound(frames_.begin(), frames_.end(), t,
                                      [](double time, const FaceFrame& frame) { return time < frame.time_s; });
  if (after == frames_.begin() || after == frames_.end()) {
    return;
  }
  const FaceFrame& a = *(after - 1);
  const FaceFrame& b = *after;
  // only between neighbours of one run of frames (not across the gap between turns), strictly inside
  if (std::fabs((b.time_s - a.time_s) * header_.fps - 1.0) > 1e-6 || !(t > a.time_s && t < b.time_s)) {
    return;
  }
  const double alpha = (t - a.time_s) / (b.time_s - a.time_s);
  double max_diff = 0.0;
  for (size_t index = 0; index < a.weights.size(); ++index) {
    const double direct = a.weights[index] + (static_cast<double>(b.weights[index]) - a.weights[index]) * alpha;
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(pose.weights[index]) - direct));
  }
  const double direct_yaw = a.head_yaw_deg + (static_cast<double>(b.head_yaw_deg) - a.head_yaw_deg) * alpha;
  const double direct_pitch = a.head_pitch_deg + (static_cast<double>(b.head_pitch_deg) - a.head_pitch_deg) * alpha;
  const double direct_roll = a.head_roll_deg + (static_cast<double>(b.head_roll_deg) - a.head_roll_deg) * alpha;
  // degrees are ~100x the weights' scale: compare them relative to a degree
  max_diff = std::max(max_diff, std::fabs(pose.head_yaw_deg - direct_yaw) / 100.0);
  max_diff = std::max(max_diff, std::fabs(pose.head_pitch_deg - direct_pitch) / 100.0);
  max_diff = std::max(max_diff, std::fabs(pose.head_roll_deg - direct_roll) / 100.0);
  ++interpolation_checks_;
  interpolation_max_abs_diff_ = std::max(interpolation_max_abs_diff_, max_diff);
  if (interpolation_samples_.size() < kInterpolationSamples) {
    constexpr size_t kJawOpen = 17;
    const double direct_jaw =
        a.weights[kJawOpen] + (static_cast<double>(b.weights[kJawOpen]) - a.weights[kJawOpen]) * alpha;
    interpolation_samples_.push_back({t, a.time_s, b.time_s, pose.weights[kJawOpen], direct_jaw});
  }
}

void AvatarClient::PlayoutLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return have_header_ || stop_playout_; });
  const double period_s = 1.0 / static_cast<double>(std::max(1u, header_.fps));
  uint64_t tick = 0;
  while (!stop_playout_) {
    const SteadyClock::time_point next_tick =
        header_arrival_ + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(
                              options_.playout_delay_s + static_cast<double>(tick) * period_s));
    // wake for the next tick, or earlier for a due interrupt (one may be armed while waiting)
    const auto next_wake = [this, next_tick] {
      SteadyClock::time_point wake = next_tick;
      for (const auto& entry : turns_) {
        if (entry.second.interrupt_armed && entry.second.interrupt_due < wake) {
          wake = entry.second.interrupt_due;
        }
      }
      return wake;
    };
    SteadyClock::time_point wake = next_wake();
    while (!stop_playout_ && SteadyClock::now() < wake) {
      changed_.wait_until(lock, wake);
      wake = next_wake();
    }
    if (stop_playout_) {
      break;
    }
    const SteadyClock::time_point now = SteadyClock::now();
    for (auto& entry : turns_) {
      TurnRecord& turn = entry.second;
      if (turn.interrupt_armed && turn.interrupt_due <= now) {
        turn.interrupt_armed = false;
        turn.interrupt_sent = true;
        turn.interrupt_sent_clock_s = ClockNow();
        pb::ClientEvent interrupt;
        interrupt.mutable_interrupt()->set_reason("avatar_client --interrupt-after-s");
        lock.unlock();
        const bool written = Write(interrupt);
        lock.lock();
        if (!written) {
          std::fprintf(stderr, "could not send the interrupt: the stream is closed\n");
        }
      }
    }
    if (now < next_tick) {
      continue;  // woke for an interrupt
    }
    ++tick;
    const double t = ClockNow();
    if (t < 0.0) {
      continue;
    }
    ++ticks_;
    last_clock_s_ = t;
    const FaceFrame pose = buffer_.Pull(t);
    if (buffer_.IsIdle(t)) {
      ++idle_ticks_;
    }
    CheckInterpolation(t, pose);
    visemes_.Prune(t);
    const avatarlink::BlendshapeWeights mouth = visemes_.Sample(t);
    max_viseme_jaw_open_ = std::max(max_viseme_jaw_open_, static_cast<double>(mouth[17]));
  }
}

int AvatarClient::Run() {
  auto channel = grpc::CreateChannel(options_.target, grpc::InsecureChannelCredentials());
  stub_ = pb::Conversation::NewStub(channel);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(options_.timeout_s));
  context_.set_deadline(deadline);
  context_.AddMetadata("application", options_.application);
  const std::string api_key = options_.api_key.empty() ? StoredCredential() : options_.api_key;
  if (!api_key.empty()) context_.AddMetadata("authorization", "Bearer " + api_key);  // every call has an owner
  stream_ = stub_->Converse(&context_);

  pb::ClientEvent start;
  start.mutable_start()->set_avatar(true);  // the user comes from the credential, not from SessionStart
  start.mutable_start()->set_max_tokens(options_.max_tokens);
  Write(start);

  std::thread reader([this] { ReadLoop(); });
  std::thread playout([this] { PlayoutLoop(); });

  bool timed_out = false;
  const auto wait_deadline = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                                      std::chrono::duration<double>(options_.timeout_s));
  for (size_t index = 0; index < options_.says.size(); ++index) {
    pb::ClientEvent text;
    text.mutable_text()->set_text(options_.says[index]);
    if (!Write(text)) {
      break;  // the stream is gone: Finish says why
    }
    std::unique_lock<std::mutex> lock(mutex_);
    if (!changed_.wait_until(lock, wait_deadline,
                             [this, index] { return stream_ended_ || text_turn_ends_ >= index + 1; })) {
      timed_out = true;
      break;
    }
    if (stream_ended_) {
      break;
    }
  }
  // let playout run past the last turn's stop_s: the buffer drains and idles
  {
    std::unique_lock<std::mutex> lock(mutex_);
    double last_stop_s = 0.0;
    for (const auto& entry : turns_) {
      if (entry.second.have_avatar_end) {
        last_stop_s = std::max(last_stop_s, entry.second.avatar_end.stop_s);
      }
    }
    if (have_header_ && !timed_out && !stream_ended_) {
      const double wait_s = std::max(0.0, last_stop_s + options_.drain_s - ClockNow());
      changed_.wait_for(lock, std::chrono::duration<double>(std::min(wait_s, 10.0)),
                        [this] { return stream_ended_; });
    }
  }
  {
    std::lock_guard<std::mutex> lock(write_mutex_);
    writes_done_ = true;
    stream_->WritesDone();
  }
  // the server ends the call once the client half-closed; cancel if it does not within a few seconds
  bool cancelled_after_done = false;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!changed_.wait_for(lock, std::chrono::seconds(5), [this] { return stream_ended_; })) {
      cancelled_after_done = true;
      context_.TryCancel();
    }
  }
  reader.join();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_playout_ = true;
    changed_.notify_all();
  }
  playout.join();
  const grpc::Status status = stream_->Finish();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    timed_out = true;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  std::fputs(Report(status, timed_out, cancelled_after_done).c_str(), stdout);
  std::fputc('\n', stdout);
  const bool grpc_ok = status.ok() || (cancelled_after_done && status.error_code() == grpc::StatusCode::CANCELLED);
  return (decode_error_count_ == 0 && server_errors_.empty() && grpc_ok && !timed_out) ? 0 : 1;
}

std::string AvatarClient::Report(const grpc::Status& status, bool timed_out, bool cancelled_after_done) const {
  JsonWriter json;
  json.BeginObject();
  json.Key("target").String(options_.target);
  json.Key("session_id").String(session_id_);
  json.Key("grpc_status").BeginObject();
  json.Key("code").Int(static_cast<int64_t>(status.error_code()));
  json.Key("message").String(status.error_message());
  json.Key("cancelled_after_writes_done").Bool(cancelled_after_done);
  json.EndObject();
  json.Key("timed_out").Bool(timed_out);
  json.Key("playout_delay_s").Number(options_.playout_delay_s);

  json.Key("header");
  if (have_header_) {
    json.BeginObject();
    json.Key("blendshape_names").BeginArray();
    for (const std::string& name : header_.blendshape_names) {
      json.String(name);
    }
    json.EndArray();
    bool arkit_order = header_.blendshape_names.size() == avatarlink::kArkitNames.size();
    for (size_t index = 0; arkit_order && index < header_.blendshape_names.size(); ++index) {
      arkit_order = header_.blendshape_names[index] == avatarlink::kArkitNames[index];
    }
    json.Key("arkit_order").Bool(arkit_order);
    json.Key("fps").UInt(header_.fps);
    json.Key("audio_sample_rate_hz").UInt(header_.audio_sample_rate_hz);
    json.Key("audio_channels").UInt(header_.audio_channels);
    json.Key("audio_encoding").String(header_.audio_encoding);
    json.Key("protocol_version").UInt(header_.protocol_version);
    json.Key("lead_s").Number(header_.lead_s);
    json.EndObject();
  } else {
    json.Null();
  }

  uint64_t face_frames = 0;
  uint64_t face_events = 0;
  uint64_t audio_chunks = 0;
  double audio_seconds = 0.0;
  uint64_t visemes = 0;
  uint64_t tokens = 0;
  for (const auto& entry : turns_) {
    face_frames += entry.second.face_frames;
    face_events += entry.second.face_events;
    audio_chunks += entry.second.audio_chunks;
    audio_seconds += entry.second.AudioSeconds();
    visemes += entry.second.visemes;
    tokens += entry.second.tokens;
  }
  const auto count = [this](const char* kind) {
    const auto found = kind_counts_.find(kind);
    return found == kind_counts_.end() ? uint64_t{0} : found->second;
  };
  json.Key("counts").BeginObject();
  json.Key("server_events").UInt(server_events_);
  json.Key("avatar_events").UInt(avatar_events_);
  json.Key("tokens").UInt(tokens);
  json.Key("face_events").UInt(face_events);
  json.Key("face_frames").UInt(face_frames);
  json.Key("audio_chunks").UInt(audio_chunks);
  json.Key("audio_seconds").Number(audio_seconds);
  json.Key("visemes").UInt(visemes);
  json.Key("emotion").UInt(count("emotion"));
  json.Key("gesture").UInt(count("gesture"));
  json.Key("camera").UInt(count("camera"));
  json.Key("environment").UInt(count("environment"));
  json.Key("avatar_turn_ends").UInt(avatar_turn_ends_);
  json.Key("text_turn_ends").UInt(text_turn_ends_);
  json.EndObject();

  json.Key("turn_ends").BeginArray();
  for (const std::string& turn_id : turn_order_) {
    const TurnRecord& turn = turns_.at(turn_id);
    if (!turn.have_avatar_end) {
      continue;
    }
    json.BeginObject();
    json.Key("turn_id").String(turn_id);
    json.Key("reason").String(avatarlink::ToString(turn.avatar_end.reason));
    json.Key("detail").String(turn.avatar_end.detail);
    json.Key("stop_s").Number(turn.avatar_end.stop_s);
    json.EndObject();
  }
  json.EndArray();

  json.Key("commands").BeginArray();
  for (const CommandRecord& command : commands_) {
    json.BeginObject();
    json.Key("kind").String(command.kind);
    json.Key("value").String(command.value);
    json.Key("reason").String(command.reason);
    json.Key("turn_id").String(command.turn_id);
    json.Key("time_s").Number(command.time_s);
    json.EndObject();
  }
  json.EndArray();

  json.Key("decode_error_count").UInt(decode_error_count_);
  json.Key("decode_errors").BeginArray();
  for (const std::string& error : decode_errors_) {
    json.String(error);
  }
  json.EndArray();
  json.Key("audio_sequence_gaps").UInt(decoder_.AudioSequenceGaps());
  json.Key("server_errors").BeginArray();
  for (const std::string& error : server_errors_) {
    json.String(error);
  }
  json.EndArray();

  const avatarlink::JitterStats& stats = buffer_.Stats();
  json.Key("jitter").BeginObject();
  json.Key("underruns").UInt(stats.underruns);
  json.Key("late_frames").UInt(stats.late_frames);
  json.Key("late_audio_blocks").UInt(stats.late_audio_blocks);
  json.Key("frames_received").UInt(stats.frames_received);
  json.Key("frames_cut").UInt(stats.frames_cut);
  json.Key("audio_blocks_cut").UInt(stats.audio_blocks_cut);
  json.Key("turns_started").UInt(stats.turns_started);
  json.Key("turns_ended").UInt(stats.turns_ended);
  json.Key("min_margin_s");
  if (stats.have_margin) {
    json.Number(stats.min_margin_s);
  } else {
    json.Null();
  }
  json.Key("ticks").UInt(ticks_);
  json.Key("idle_ticks").UInt(idle_ticks_);
  json.Key("last_clock_s").Number(last_clock_s_);
  json.Key("idle_at_end").Bool(buffer_.IsIdle(last_clock_s_));
  json.EndObject();

  json.Key("turns").BeginArray();
  for (const std::string& turn_id : turn_order_) {
    const TurnRecord& turn = turns_.at(turn_id);
    json.BeginObject();
    json.Key("turn_id").String(turn_id);
    json.Key("user_text").String(turn.user_text);
    json.Key("topic").String(turn.topic);
    json.Key("intent").String(turn.intent);
    json.Key("route").String(turn.route);
    json.Key("tokens").UInt(turn.tokens);
    json.Key("face_events").UInt(turn.face_events);
    json.Key("face_frames").UInt(turn.face_frames);
    json.Key("frames_after_stop").UInt(turn.frames_after_stop);
    json.Key("first_frame_s").Number(turn.first_frame_s);
    json.Key("last_frame_s").Number(turn.last_frame_s);
    json.Key("audio_chunks").UInt(turn.audio_chunks);
    json.Key("audio_seconds").Number(turn.AudioSeconds());
    json.Key("first_audio_s").Number(turn.first_audio_s);
    json.Key("audio_end_s").Number(turn.audio_end_s);
    json.Key("visemes").UInt(turn.visemes);
    json.Key("min_arrival_lead_s").Number(turn.min_arrival_lead_s);
    json.Key("max_arrival_lead_s").Number(turn.max_arrival_lead_s);
    json.Key("commands").BeginObject();
    for (const auto& command : turn.commands) {
      json.Key(command.first).UInt(command.second);
    }
    json.EndObject();
    json.Key("interrupt_sent_s");
    if (turn.interrupt_sent) {
      json.Number(turn.interrupt_sent_clock_s);
    } else {
      json.Null();
    }
    json.Key("avatar_turn_end");
    if (turn.have_avatar_end) {
      json.BeginObject();
      json.Key("reason").String(avatarlink::ToString(turn.avatar_end.reason));
      json.Key("detail").String(turn.avatar_end.detail);
      json.Key("stop_s").Number(turn.avatar_end.stop_s);
      json.Key("time_s").Number(turn.avatar_end_time_s);
      json.Key("arrival_clock_s").Number(turn.avatar_end_arrival_clock_s);
      json.EndObject();
    } else {
      json.Null();
    }
    json.Key("text_turn_end");
    if (turn.have_text_end) {
      json.BeginObject();
      json.Key("reason").String(turn.text_end_reason);
      json.Key("detail").String(turn.text_end_detail);
      json.Key("tokens").UInt(turn.text_end_tokens);
      json.EndObject();
    } else {
      json.Null();
    }
    json.EndObject();
  }
  json.EndArray();

  json.Key("interpolation").BeginObject();
  json.Key("checks").UInt(interpolation_checks_);
  json.Key("max_abs_diff").Number(interpolation_max_abs_diff_);
  json.Key("samples").BeginArray();
  for (const InterpolationSample& sample : interpolation_samples_) {
    json.BeginObject();
    json.Key("t").Number(sample.t);
    json.Key("frame_a_s").Number(sample.a_s);
    json.Key("frame_b_s").Number(sample.b_s);
    json.Key("buffer_jaw_open").Number(sample.buffer_jaw_open);
    json.Key("direct_jaw_open").Number(sample.direct_jaw_open);
    json.EndObject();
  }
  json.EndArray();
  json.EndObject();
  json.Key("viseme_blend_max_jaw_open").Number(max_viseme_jaw_open_);
  json.EndObject();
  return json.Text();
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::string error;
  if (!ParseArgs(argc, argv, options, error)) {
    std::fprintf(stderr, "%s%s%s", error.c_str(), error.empty() ? "" : "\n", kUsage);
    return error.empty() ? 0 : 2;
  }
  AvatarClient client(std::move(options));
  return client.Run();
}
