// Project Settings > Plugins > AvatarLink (saved to Config/DefaultGame.ini, section
// [/Script/AvatarLink.AvatarLinkSettings]). Read when UAvatarLinkSubsystem::Connect is called.
#pragma once

#include "CoreMinimal.h"
#include "Engine/DeveloperSettings.h"
#include "AvatarLinkTypes.h"

#include "AvatarLinkSettings.generated.h"

class UWorld;

UCLASS(Config = Game, DefaultConfig, meta = (DisplayName = "AvatarLink"))
class AVATARLINK_API UAvatarLinkSettings : public UDeveloperSettings
{
	GENERATED_BODY()

public:
	virtual FName GetCategoryName() const override { return TEXT("Plugins"); }

	// host:port of the Ray Serve gRPC proxy (`almquist up` listens on 9000). Used when Connect gets an empty target.
	UPROPERTY(Config, EditAnywhere, Category = "Connection")
	FString DefaultTarget = TEXT("localhost:9000");

	// The Serve application the calls go to (sent as the `application` gRPC metadata, like the Python client).
	UPROPERTY(Config, EditAnywhere, Category = "Connection")
	FString Application = TEXT("conversation");

	// The API key every call carries (`authorization: Bearer ...`): `almquist keys create <user>` makes one. Empty:
	// the ALMQUIST_API_KEY environment variable, else the first line of ~/.almquist/credentials (`almquist up`'s).
	UPROPERTY(Config, EditAnywhere, Category = "Connection")
	FString ApiKey;

	// TLS with the system's root certificates instead of a plaintext channel.
	UPROPERTY(Config, EditAnywhere, Category = "Connection")
	bool bUseTls = false;

	// Maximum answer tokens per turn; 0 leaves it to the server.
	UPROPERTY(Config, EditAnywhere, Category = "Connection", meta = (ClampMin = "0"))
	int32 MaxTokens = 0;

	// First wait before reconnecting; it doubles on every failed attempt (with jitter) up to MaxBackoffSeconds.
	UPROPERTY(Config, EditAnywhere, Category = "Connection", meta = (ClampMin = "0.05", Units = "s"))
	float InitialBackoffSeconds = 0.5f;

	UPROPERTY(Config, EditAnywhere, Category = "Connection", meta = (ClampMin = "0.1", Units = "s"))
	float MaxBackoffSeconds = 30.0f;

	// How long one attempt waits for the channel to connect.
	UPROPERTY(Config, EditAnywhere, Category = "Connection", meta = (ClampMin = "0.5", Units = "s"))
	float ConnectTimeoutSeconds = 10.0f;

	// The Live Link subject the face is published as: set it as the MetaHuman face's Live Link subject.
	UPROPERTY(Config, EditAnywhere, Category = "Face")
	FName LiveLinkSubjectName = TEXT("AvatarLink");

	UPROPERTY(Config, EditAnywhere, Category = "Face")
	EAvatarFaceInterpolation Interpolation = EAvatarFaceInterpolation::Linear;

	// Drive jaw, mouth and tongue from the Viseme events (client-side coarticulation) instead of the face frames.
	UPROPERTY(Config, EditAnywhere, Category = "Face")
	bool bMouthFromVisemes = false;

	// Sample the face one engine frame ahead: Live Link shows a pushed pose on the next frame.
	UPROPERTY(Config, EditAnywhere, Category = "Face")
	bool bCompensateLiveLinkDelay = true;

	// Time constant of the ease to the neutral face between turns.
	UPROPERTY(Config, EditAnywhere, Category = "Face", meta = (ClampMin = "0.0", Units = "s"))
	float RestBlendSeconds = 0.3f;

	// Flip a head axis if your rig turns the wrong way (the stream: positive yaw and roll to the avatar's left,
	// positive pitch looks down; published like Live Link Face, degrees / 180).
	UPROPERTY(Config, EditAnywhere, Category = "Face")
	bool bInvertHeadYaw = false;

	UPROPERTY(Config, EditAnywhere, Category = "Face")
	bool bInvertHeadPitch = false;

	UPROPERTY(Config, EditAnywhere, Category = "Face")
	bool bInvertHeadRoll = false;

	// Loudspeaker delay behind the samples the mixer takes (mixer buffers + device). Raise it if the lips lead the
	// voice, lower it if they lag.
	UPROPERTY(Config, EditAnywhere, Category = "Audio", meta = (ClampMin = "0.0", ClampMax = "0.5", Units = "s"))
	float OutputLatencySeconds = 0.05f;

	// Voice kept queued on the procedural wave ahead of the mixer.
	UPROPERTY(Config, EditAnywhere, Category = "Audio", meta = (ClampMin = "0.02", ClampMax = "1.0", Units = "s"))
	float QueueAheadSeconds = 0.1f;

	// Voice buffered before a turn starts playing (at least the stream header's lead_s).
	UPROPERTY(Config, EditAnywhere, Category = "Audio", meta = (ClampMin = "0.0", ClampMax = "2.0", Units = "s"))
	float MinPrebufferSeconds = 0.1f;

	// What an Environment event does besides OnEnvironment.
	UPROPERTY(Config, EditAnywhere, Category = "Scenes")
	EAvatarSceneSwitch SceneSwitch = EAvatarSceneSwitch::None;

	// The level of each scene, for SceneSwitch.
	UPROPERTY(Config, EditAnywhere, Category = "Scenes")
	TMap<EAvatarScene, TSoftObjectPtr<UWorld>> SceneLevels;
};
