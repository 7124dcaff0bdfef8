#include "AvatarTypes.h"

#include <cstring>

namespace avatarlink {

const char* ToString(TurnEndReason reason) {
  switch (reason) {
    case TurnEndReason::kUnspecified:
      return "TURN_END_REASON_UNSPECIFIED";
    case TurnEndReason::kCompleted:
      return "TURN_END_REASON_COMPLETED";
    case TurnEndReason::kInterrupted:
      return "TURN_END_REASON_INTERRUPTED";
    case TurnEndReason::kMaxTokens:
      return "TURN_END_REASON_MAX_TOKENS";
    case TurnEndReason::kFailed:
      return "TURN_END_REASON_ERROR";
  }
  return "UNKNOWN";
}

const char* ToString(EmotionKind kind) {
  switch (kind) {
    case EmotionKind::kNeutral:
      return "EMOTION_KIND_NEUTRAL";
    case EmotionKind::kJoy:
      return "EMOTION_KIND_JOY";
    case EmotionKind::kSadness:
      return "EMOTION_KIND_SADNESS";
    case EmotionKind::kAnger:
      return "EMOTION_KIND_ANGER";
    case EmotionKind::kFear:
      return "EMOTION_KIND_FEAR";
    case EmotionKind::kSurprise:
      return "EMOTION_KIND_SURPRISE";
    case EmotionKind::kDisgust:
      return "EMOTION_KIND_DISGUST";
    case EmotionKind::kExcitement:
      return "EMOTION_KIND_EXCITEMENT";
  }
  return "UNKNOWN";
}

const char* ToString(CameraShot shot) {
  switch (shot) {
    case CameraShot::kMedium:
      return "SHOT_MEDIUM";
    case CameraShot::kCloseUp:
      return "SHOT_CLOSE_UP";
    case CameraShot::kWide:
      return "SHOT_WIDE";
  }
  return "UNKNOWN";
}

const char* ToString(SceneKind scene) {
  switch (scene) {
    case SceneKind::kLibrary:
      return "SCENE_LIBRARY";
    case SceneKind::kMovieTheater:
      return "SCENE_MOVIE_THEATER";
    case SceneKind::kSportsArena:
      return "SCENE_SPORTS_ARENA";
    case SceneKind::kMusicStudio:
      return "SCENE_MUSIC_STUDIO";
    case SceneKind::kOutdoorNature:
      return "SCENE_OUTDOOR_NATURE";
  }
  return "UNKNOWN";
}

const char* ToString(AvatarEventKind kind) {
  switch (kind) {
    case AvatarEventKind::kNone:
      return "none";
    case AvatarEventKind::kHeader:
      return "header";
    case AvatarEventKind::kAudio:
      return "audio";
    case AvatarEventKind::kFace:
      return "face";
    case AvatarEventKind::kViseme:
      return "viseme";
    case AvatarEventKind::kEmotion:
      return "emotion";
    case AvatarEventKind::kGesture:
      return "gesture";
    case AvatarEventKind::kCamera:
      return "camera";
    case AvatarEventKind::kEnvironment:
      return "environment";
    case AvatarEventKind::kTurnEnd:
      return "turn_end";
  }
  return "unknown";
}

int ArkitIndex(const std::string& name) {
  for (int index = 0; index < kNumBlendshapes; ++index) {
    if (std::strcmp(kArkitNames[static_cast<size_t>(index)], name.c_str()) == 0) {
      return index;
    }
  }
  return -1;
}

}  // namespace avatarlink
