// Blueprint-facing types of AvatarLink. The enums mirror protos/almquist/v1/avatar.proto and common.proto value for
// value (same order from 0); a value this plugin does not know yet (a newer server) arrives as Unknown.
#pragma once

#include "CoreMinimal.h"

#include "AvatarLinkTypes.generated.h"

UENUM(BlueprintType)
enum class EAvatarLinkConnectionState : uint8
{
	Disconnected,
	// Opening the Converse stream (first time or after a failure).
	Connecting,
	// The session is open (SessionStarted received).
	Connected,
	// The stream failed; the next attempt comes after a backoff.
	Reconnecting,
	// The server refused the session for good (bad personality, unauthenticated, ...): no more attempts.
	Failed,
};

// almquist.v1.EmotionKind
UENUM(BlueprintType)
enum class EAvatarEmotion : uint8
{
	Neutral,
	Joy,
	Sadness,
	Anger,
	Fear,
	Surprise,
	Disgust,
	Excitement,
	Unknown,
};

// almquist.v1.Shot
UENUM(BlueprintType)
enum class EAvatarCameraShot : uint8
{
	Medium,
	CloseUp,
	Wide,
	Unknown,
};

// almquist.v1.Scene
UENUM(BlueprintType)
enum class EAvatarScene : uint8
{
	Library,
	MovieTheater,
	SportsArena,
	MusicStudio,
	OutdoorNature,
	Unknown,
};

// almquist.v1.TurnEndReason
UENUM(BlueprintType)
enum class EAvatarTurnEndReason : uint8
{
	Unspecified,
	Completed,
	Interrupted,
	MaxTokens,
	Error,
	Unknown,
};

// How the face moves between two received frames (the render rate rarely matches the stream's fps).
UENUM(BlueprintType)
enum class EAvatarFaceInterpolation : uint8
{
	Linear,
	// Eases in and out of each frame.
	Smoothstep,
};

// What an Environment event does besides OnEnvironment.
UENUM(BlueprintType)
enum class EAvatarSceneSwitch : uint8
{
	// Nothing: Blueprint handles OnEnvironment.
	None,
	// Streams the scene's level in (ULevelStreamingDynamic) and the previous one out; the avatar stays.
	StreamSublevel,
	// Travels to the scene's level (UGameplayStatics::OpenLevel): the level must hold its own avatar.
	OpenLevel,
};

// Counters of the stream, for debugging displays.
USTRUCT(BlueprintType)
struct FAvatarLinkStats
{
	GENERATED_BODY()

	// Face frames that arrived after their time had been played.
	UPROPERTY(BlueprintReadOnly, Category = "AvatarLink")
	int64 LateFrames = 0;

	// Game ticks whose face had no frame to move to while the voice played.
	UPROPERTY(BlueprintReadOnly, Category = "AvatarLink")
	int64 Underruns = 0;

	// Voice waves restarted to drop audio past an interrupt's stop time.
	UPROPERTY(BlueprintReadOnly, Category = "AvatarLink")
	int64 VoiceRestarts = 0;

	// Events that broke the stream contract (see the log for each).
	UPROPERTY(BlueprintReadOnly, Category = "AvatarLink")
	int64 ProtocolErrors = 0;

	// Playout time on the audio clock, in seconds.
	UPROPERTY(BlueprintReadOnly, Category = "AvatarLink")
	float PlayoutSeconds = 0.0f;
};
