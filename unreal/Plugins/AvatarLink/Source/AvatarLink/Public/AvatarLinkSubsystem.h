// UAvatarLinkSubsystem: the Blueprint face of AvatarLink, one per game instance.
//
// Connect opens almquist.v1.Conversation/Converse with the avatar on (SessionStart.avatar) and keeps it open,
// reconnecting and resuming the session after failures. A background thread reads the stream; every game tick the
// subsystem drains what it decoded, plays the voice on a procedural sound wave, publishes the face as the Live Link
// subject "AvatarLink" (52 ARKit curves + HeadYaw/HeadPitch/HeadRoll, like Live Link Face), and fires the events
// below when their time comes on the voice's audio clock.
#pragma once

#include "CoreMinimal.h"
#include "Containers/Ticker.h"
#include "Subsystems/GameInstanceSubsystem.h"
#include "Templates/UniquePtr.h"
#include "AvatarLinkTypes.h"

#include "AvatarLinkSubsystem.generated.h"

class FAvatarLinkSource;
class FAvatarStreamClient;
class UAudioComponent;
class ULevelStreamingDynamic;
class USoundWaveProcedural;
struct FAvatarInboundEvent;
namespace AvatarLink
{
class FAvatarPlayback;
struct FPlaybackOutput;
}

DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FAvatarLinkConnectionChangedSignature, EAvatarLinkConnectionState, State, const FString&, Detail);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FAvatarLinkEmotionSignature, EAvatarEmotion, Emotion, float, Intensity, float, BlendSeconds);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FAvatarLinkGestureSignature, const FString&, Name, float, Intensity, float, DurationSeconds);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FAvatarLinkCameraSignature, EAvatarCameraShot, Shot, const FString&, Reason, float, TransitionSeconds);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FAvatarLinkEnvironmentSignature, EAvatarScene, Scene, const FString&, Reason);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FAvatarLinkTurnStartedSignature, const FString&, TurnId, const FString&, UserText, const FString&, Topic);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FAvatarLinkTurnEndedSignature, const FString&, TurnId, EAvatarTurnEndReason, Reason, const FString&, Detail);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FAvatarLinkTranscriptSignature, const FString&, Text, bool, bFinal);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_ThreeParams(FAvatarLinkAnswerTextSignature, const FString&, TurnId, const FString&, Delta, const FString&, TextSoFar);
DECLARE_DYNAMIC_MULTICAST_DELEGATE_TwoParams(FAvatarLinkErrorSignature, int32, Code, const FString&, Message);

UCLASS()
class AVATARLINK_API UAvatarLinkSubsystem : public UGameInstanceSubsystem
{
	GENERATED_BODY()

public:
	UAvatarLinkSubsystem();
	// Out of line: the owned client and playback are incomplete types here.
	virtual ~UAvatarLinkSubsystem() override;

	virtual void Initialize(FSubsystemCollectionBase& Collection) override;
	virtual void Deinitialize() override;

	// Opens the session. Target: "host:port" of the Serve gRPC proxy (empty: the project setting, localhost:9000).
	// Personality: e.g. "friendly", "critic" (empty: the server's default). Replaces an open connection. Returns
	// false (and logs why) when the input is unusable or the stream threads cannot start.
	UFUNCTION(BlueprintCallable, Category = "AvatarLink")
	bool Connect(const FString& Target, const FString& UserId, const FString& Personality);

	// Sends one typed turn. The server answers turns one after another.
	UFUNCTION(BlueprintCallable, Category = "AvatarLink")
	void SendText(const FString& Text);

	// Stops the answer being spoken; its OnTurnEnded follows with Reason Interrupted.
	UFUNCTION(BlueprintCallable, Category = "AvatarLink")
	void Interrupt(const FString& Reason);

	// Closes the stream and stops the voice. The Live Link subject is removed.
	UFUNCTION(BlueprintCallable, Category = "AvatarLink")
	void Disconnect();

	// Plays the voice on this component (e.g. attached to the MetaHuman's head, for spatial sound) instead of a 2D
	// sound. Takes effect with the next stream header (or at once when a stream is playing).
	UFUNCTION(BlueprintCallable, Category = "AvatarLink")
	void SetVoiceAudioComponent(UAudioComponent* Component);

	UFUNCTION(BlueprintPure, Category = "AvatarLink")
	EAvatarLinkConnectionState GetConnectionState() const { return ConnectionState; }

	// The session's id once connected (resumed automatically after a reconnect).
	UFUNCTION(BlueprintPure, Category = "AvatarLink")
	FString GetSessionId() const { return SessionId; }

	// The avatar's voice is playing (the face follows the stream rather than resting).
	UFUNCTION(BlueprintPure, Category = "AvatarLink")
	bool IsSpeaking() const { return bSpeaking; }

	UFUNCTION(BlueprintPure, Category = "AvatarLink")
	FAvatarLinkStats GetStats() const;

	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkConnectionChangedSignature OnConnectionChanged;

	// An emotion to blend in over BlendSeconds (the face frames carry it already; use it for body or lighting).
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkEmotionSignature OnEmotion;

	// A gesture from the avatar's set ("nod", "shrug", "point", "thumbs_up", "open_palm", ...).
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkGestureSignature OnGesture;

	// A camera cut (TransitionSeconds 0) or move.
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkCameraSignature OnCamera;

	// A scene change chosen from the turn's topic (see the SceneSwitch project setting).
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkEnvironmentSignature OnEnvironment;

	// The server accepted a user turn (typed or spoken); Topic: "movies", "sports", "music", "news", "nature", ...
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkTurnStartedSignature OnTurnStarted;

	// The avatar finished speaking a turn (its voice has played to the end, or to the interrupt's stop time).
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkTurnEndedSignature OnTurnEnded;

	// What the server heard the user say (partial, then final) in a spoken turn; this plugin sends typed turns.
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkTranscriptSignature OnTranscript;

	// The answer's text as it is generated, for subtitles (it runs ahead of the voice).
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkAnswerTextSignature OnAnswerText;

	// A rejected turn (Code: a gRPC status, e.g. 3 INVALID_ARGUMENT) or a turn that could not be sent.
	UPROPERTY(BlueprintAssignable, Category = "AvatarLink|Events")
	FAvatarLinkErrorSignature OnError;

private:
	bool TickStream(float DeltaSeconds);
	void HandleInbound(FAvatarInboundEvent& Event);
	void ApplyPlaybackOutput(const AvatarLink::FPlaybackOutput& Output);
	void SetConnectionState(EAvatarLinkConnectionState State, const FString& Detail);
	void StartVoice(uint32 SampleRateHz);
	void StopVoice();
	UAudioComponent* VoiceComponent() const;
	int64 VoiceAvailableFrames(double NowSeconds);
	void QueueVoice(const int16* Samples, int32 NumSamples);
	void PublishPose(const AvatarLink::FPlaybackOutput& Output);
	void SwitchScene(EAvatarScene Scene);
	void RegisterLiveLinkSource(const FString& Target);
	void UnregisterLiveLinkSource();

	TUniquePtr<FAvatarStreamClient> Client;
	TUniquePtr<AvatarLink::FAvatarPlayback> Playback;
	TSharedPtr<FAvatarLinkSource> LiveLinkSource;
	FTSTicker::FDelegateHandle TickerHandle;

	// The 2D voice this subsystem made (when no component was set with SetVoiceAudioComponent).
	UPROPERTY(Transient)
	TObjectPtr<UAudioComponent> OwnVoiceComponent;

	UPROPERTY(Transient)
	TObjectPtr<USoundWaveProcedural> VoiceWave;

	TWeakObjectPtr<UAudioComponent> UserVoiceComponent;
	TWeakObjectPtr<ULevelStreamingDynamic> SceneLevel;
	EAvatarScene CurrentScene = EAvatarScene::Unknown;

	// Without an audio device (-nosound, a server build) the voice is not heard but its clock still runs: the
	// samples a real mixer would have taken are counted from the wall clock.
	bool bSilentVoice = false;
	uint32 VoiceSampleRate = 0;
	double SilentAvailableFrames = 0.0;
	double SilentLastSeconds = 0.0;
	// A wave that holds samples nobody takes (its component was destroyed, say) would stop the clock for good.
	int64 LastVoiceAvailable = 0;
	double LastVoiceProgressSeconds = 0.0;

	EAvatarLinkConnectionState ConnectionState = EAvatarLinkConnectionState::Disconnected;
	FString SessionId;
	FString AnswerTurnId;
	FString AnswerSoFar;
	bool bSpeaking = false;
	int64 ProtocolErrorCount = 0;
	TArray<float> CurveValues;
};
