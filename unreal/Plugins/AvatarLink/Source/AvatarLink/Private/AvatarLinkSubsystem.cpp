#include "AvatarLinkSubsystem.h"

#include "AvatarLinkCoreIncludes.h"
#include "AvatarLinkLog.h"
#include "AvatarLinkSettings.h"
#include "AvatarLinkSource.h"
#include "AvatarStreamClient.h"
#include "Components/AudioComponent.h"
#include "Engine/GameInstance.h"
#include "Engine/LevelStreamingDynamic.h"
#include "Engine/World.h"
#include "Features/IModularFeatures.h"
#include "HAL/PlatformMisc.h"
#include "HAL/PlatformProcess.h"
#include "HAL/PlatformTime.h"
#include "ILiveLinkClient.h"
#include "Kismet/GameplayStatics.h"
#include "Misc/FileHelper.h"
#include "Misc/Paths.h"
#include "Sound/SoundWaveProcedural.h"

namespace
{
// The Blueprint enums list the proto values in order from 0, then Unknown.
static_assert(static_cast<int32>(EAvatarEmotion::Excitement) == static_cast<int32>(avatarlink::EmotionKind::kExcitement), "EAvatarEmotion must follow almquist.v1.EmotionKind");
static_assert(static_cast<int32>(EAvatarCameraShot::Wide) == static_cast<int32>(avatarlink::CameraShot::kWide), "EAvatarCameraShot must follow almquist.v1.Shot");
static_assert(static_cast<int32>(EAvatarScene::OutdoorNature) == static_cast<int32>(avatarlink::SceneKind::kOutdoorNature), "EAvatarScene must follow almquist.v1.Scene");
static_assert(static_cast<int32>(EAvatarTurnEndReason::Error) == static_cast<int32>(avatarlink::TurnEndReason::kFailed), "EAvatarTurnEndReason must follow almquist.v1.TurnEndReason");

// A wave whose samples nobody takes for this long (outside a pause) is treated as unheard: see VoiceAvailableFrames.
constexpr double StalledVoiceSeconds = 2.0;

FString ToFString(const std::string& Utf8)
{
	return FString(UTF8_TO_TCHAR(Utf8.c_str()));
}

template <typename TEnum, typename TProtoEnum>
TEnum FromProto(TProtoEnum Value)
{
	const int32 Raw = static_cast<int32>(Value);
	return Raw >= 0 && Raw < static_cast<int32>(TEnum::Unknown) ? static_cast<TEnum>(Raw) : TEnum::Unknown;
}

AvatarLink::FPlaybackSettings MakePlaybackSettings(const UAvatarLinkSettings& Settings)
{
	AvatarLink::FPlaybackSettings Result;
	Result.QueueAheadS = Settings.QueueAheadSeconds;
	Result.MinPrebufferS = Settings.MinPrebufferSeconds;
	Result.OutputLatencyS = Settings.OutputLatencySeconds;
	Result.RestBlendS = Settings.RestBlendSeconds;
	Result.bMouthFromVisemes = Settings.bMouthFromVisemes;
	Result.Interpolation = Settings.Interpolation == EAvatarFaceInterpolation::Smoothstep
		? avatarlink::InterpolationMode::kSmoothstep
		: avatarlink::InterpolationMode::kLinear;
	return Result;
}
}  // namespace

UAvatarLinkSubsystem::UAvatarLinkSubsystem()
{
}

UAvatarLinkSubsystem::~UAvatarLinkSubsystem()
{
}

void UAvatarLinkSubsystem::Initialize(FSubsystemCollectionBase& Collection)
{
	Super::Initialize(Collection);
	// The core ticker runs every engine frame, paused or not, in the editor's PIE as in a packaged game.
	TickerHandle = FTSTicker::GetCoreTicker().AddTicker(FTickerDelegate::CreateUObject(this, &UAvatarLinkSubsystem::TickStream));
}

void UAvatarLinkSubsystem::Deinitialize()
{
	Disconnect();
	FTSTicker::GetCoreTicker().RemoveTicker(TickerHandle);
	TickerHandle.Reset();
	Super::Deinitialize();
}

bool UAvatarLinkSubsystem::Connect(const FString& Target, const FString& UserId, const FString& Personality)
{
	const UAvatarLinkSettings* Settings = GetDefault<UAvatarLinkSettings>();
	FString ResolvedTarget = Target.TrimStartAndEnd();
	if (ResolvedTarget.IsEmpty())
	{
		ResolvedTarget = Settings->DefaultTarget.TrimStartAndEnd();
	}
	if (ResolvedTarget.IsEmpty() || ResolvedTarget.Contains(TEXT(" ")))
	{
		UE_LOG(LogAvatarLink, Error, TEXT("Connect: '%s' is not a gRPC target; expected host:port, e.g. localhost:9000."), *Target);
		return false;
	}

	Disconnect();

	FAvatarStreamClientConfig Config;
	Config.Target = ResolvedTarget;
	Config.Application = Settings->Application;
	Config.ApiKey = Settings->ApiKey.TrimStartAndEnd();
	if (Config.ApiKey.IsEmpty())
	{
		Config.ApiKey = FPlatformMisc::GetEnvironmentVariable(TEXT("ALMQUIST_API_KEY")).TrimStartAndEnd();
	}
	if (Config.ApiKey.IsEmpty())
	{
		FString Stored;
		const FString Path = FPaths::Combine(FPlatformProcess::UserHomeDir(), TEXT(".almquist"), TEXT("credentials"));
		if (FFileHelper::LoadFileToString(Stored, *Path))
		{
			Stored.Split(TEXT("\n"), &Stored, nullptr);
			Config.ApiKey = Stored.TrimStartAndEnd();
		}
	}
	Config.UserId = UserId.TrimStartAndEnd();
	Config.Personality = Personality.TrimStartAndEnd();
	Config.MaxTokens = static_cast<uint32>(FMath::Max(0, Settings->MaxTokens));
	Config.bUseTls = Settings->bUseTls;
	Config.InitialBackoffSeconds = Settings->InitialBackoffSeconds;
	Config.MaxBackoffSeconds = FMath::Max(Settings->MaxBackoffSeconds, Settings->InitialBackoffSeconds);
	Config.ConnectTimeoutSeconds = Settings->ConnectTimeoutSeconds;

	Playback = MakeUnique<AvatarLink::FAvatarPlayback>(MakePlaybackSettings(*Settings));
	RegisterLiveLinkSource(ResolvedTarget);
	Client = MakeUnique<FAvatarStreamClient>(Config);
	if (!Client->Start())
	{
		Client.Reset();
		SetConnectionState(EAvatarLinkConnectionState::Failed, TEXT("could not start the stream threads"));
		return false;
	}
	SetConnectionState(EAvatarLinkConnectionState::Connecting, ResolvedTarget);
	return true;
}

void UAvatarLinkSubsystem::SendText(const FString& Text)
{
	const FString Trimmed = Text.TrimStartAndEnd();
	if (Trimmed.IsEmpty())
	{
		UE_LOG(LogAvatarLink, Warning, TEXT("SendText: the text is empty; nothing sent."));
		OnError.Broadcast(3 /* INVALID_ARGUMENT */, TEXT("SendText: the text is empty"));
		return;
	}
	if (!Client.IsValid())
	{
		UE_LOG(LogAvatarLink, Warning, TEXT("SendText: not connected (call Connect first); nothing sent."));
		OnError.Broadcast(9 /* FAILED_PRECONDITION */, TEXT("SendText: not connected"));
		return;
	}
	// Sent as soon as a call is live: turns typed during a reconnect go out once it is back.
	Client->SendText(Trimmed);
}

void UAvatarLinkSubsystem::Interrupt(const FString& Reason)
{
	if (!Client.IsValid())
	{
		return;
	}
	Client->Interrupt(Reason.IsEmpty() ? FString(TEXT("interrupted by the user")) : Reason);
}

void UAvatarLinkSubsystem::Disconnect()
{
	if (Client.IsValid())
	{
		Client->Shutdown();
		Client.Reset();
	}
	StopVoice();
	Playback.Reset();
	UnregisterLiveLinkSource();
	bSpeaking = false;
	AnswerTurnId.Reset();
	AnswerSoFar.Reset();
	if (ConnectionState != EAvatarLinkConnectionState::Disconnected)
	{
		SetConnectionState(EAvatarLinkConnectionState::Disconnected, FString());
	}
}

void UAvatarLinkSubsystem::SetVoiceAudioComponent(UAudioComponent* Component)
{
	UAudioComponent* Previous = VoiceComponent();
	UserVoiceComponent = Component;
	if (VoiceWave == nullptr || bSilentVoice)
	{
		return;  // used from the next stream header on
	}
	// Move the playing wave: its queued samples carry over (what the old source had pulled is lost).
	UAudioComponent* Next = VoiceComponent();
	if (Previous != nullptr && Previous != Next)
	{
		Previous->Stop();
	}
	if (Next == nullptr)
	{
		OwnVoiceComponent = UGameplayStatics::CreateSound2D(GetGameInstance(), VoiceWave, 1.0f, 1.0f, 0.0f, nullptr, true, false);
		Next = OwnVoiceComponent;
	}
	if (Next != nullptr && Next != Previous)
	{
		Next->SetSound(VoiceWave);
		Next->Play();
	}
}

FAvatarLinkStats UAvatarLinkSubsystem::GetStats() const
{
	FAvatarLinkStats Stats;
	Stats.ProtocolErrors = ProtocolErrorCount;
	if (Playback.IsValid())
	{
		const avatarlink::JitterStats& Jitter = Playback->Stats();
		Stats.LateFrames = static_cast<int64>(Jitter.late_frames);
		Stats.Underruns = static_cast<int64>(Jitter.underruns);
		Stats.VoiceRestarts = static_cast<int64>(Playback->VoiceRestarts());
		Stats.PlayoutSeconds = static_cast<float>(Playback->PlayoutS());
	}
	return Stats;
}

bool UAvatarLinkSubsystem::TickStream(float DeltaSeconds)
{
	// What the connection thread decoded since the last tick, in stream order. A handler may call Disconnect.
	FAvatarInboundEvent Event;
	while (Client.IsValid() && Client->PollEvent(Event))
	{
		HandleInbound(Event);
	}
	if (!Playback.IsValid())
	{
		return true;
	}
	if (Playback->ConsumeNewHeader())
	{
		StartVoice(Playback->Header().audio_sample_rate_hz);
	}
	const UAvatarLinkSettings* Settings = GetDefault<UAvatarLinkSettings>();
	// Live Link applies a pushed frame on the next engine frame: sample the face that much ahead.
	const double FaceLeadSeconds = Settings->bCompensateLiveLinkDelay ? FMath::Max(0.0, static_cast<double>(DeltaSeconds)) : 0.0;
	const double NowSeconds = FPlatformTime::Seconds();
	AvatarLink::FPlaybackOutput Output;
	Playback->Tick(NowSeconds, VoiceAvailableFrames(NowSeconds), FaceLeadSeconds, Output);
	ApplyPlaybackOutput(Output);
	return true;  // keep ticking
}

void UAvatarLinkSubsystem::HandleInbound(FAvatarInboundEvent& Event)
{
	switch (Event.Kind)
	{
	case EAvatarInboundKind::Connecting:
		if (ConnectionState != EAvatarLinkConnectionState::Connecting)
		{
			SetConnectionState(EAvatarLinkConnectionState::Connecting, Event.Text);
		}
		break;
	case EAvatarInboundKind::StreamOpened:
		// A new call is a new avatar stream (its header comes next): what the old one left unfinished never ends.
		if (Playback.IsValid())
		{
			for (const std::string& TurnId : Playback->Reset())
			{
				OnTurnEnded.Broadcast(ToFString(TurnId), EAvatarTurnEndReason::Error, TEXT("the connection was lost"));
			}
		}
		StopVoice();
		bSpeaking = false;
		break;
	case EAvatarInboundKind::SessionStarted:
		SessionId = Event.Text;
		SetConnectionState(EAvatarLinkConnectionState::Connected,
			FString::Printf(TEXT("session %s%s"), *SessionId, Event.bFlag ? TEXT(" (resumed)") : TEXT("")));
		break;
	case EAvatarInboundKind::TurnStarted:
		AnswerTurnId = Event.TurnId;
		AnswerSoFar.Reset();
		OnTurnStarted.Broadcast(Event.TurnId, Event.Text, Event.Detail);
		break;
	case EAvatarInboundKind::AnswerToken:
		if (Event.TurnId != AnswerTurnId)
		{
			AnswerTurnId = Event.TurnId;
			AnswerSoFar.Reset();
		}
		AnswerSoFar += Event.Text;
		OnAnswerText.Broadcast(Event.TurnId, Event.Text, AnswerSoFar);
		break;
	case EAvatarInboundKind::Transcript:
		OnTranscript.Broadcast(Event.Text, Event.bFlag);
		break;
	case EAvatarInboundKind::TextTurnEnded:
		// The avatar's own turn end (OnTurnEnded) comes through the playback, when the voice has finished.
		UE_LOG(LogAvatarLink, Verbose, TEXT("Turn %s: text complete (reason %d) %s"), *Event.TurnId, Event.Code, *Event.Text);
		break;
	case EAvatarInboundKind::ServerError:
		UE_LOG(LogAvatarLink, Warning, TEXT("The server rejected an event (%d): %s"), Event.Code, *Event.Text);
		OnError.Broadcast(Event.Code, Event.Text);
		break;
	case EAvatarInboundKind::Avatar:
		if (Playback.IsValid())
		{
			Playback->OnEvent(Event.Avatar, FPlatformTime::Seconds());
		}
		break;
	case EAvatarInboundKind::ProtocolError:
		++ProtocolErrorCount;
		UE_LOG(LogAvatarLink, Warning, TEXT("Avatar stream (turn %s): %s"), *Event.TurnId, *Event.Text);
		break;
	case EAvatarInboundKind::SendFailed:
		OnError.Broadcast(14 /* UNAVAILABLE */, FString::Printf(TEXT("not delivered, the connection broke: %s"), *Event.Text));
		break;
	case EAvatarInboundKind::Reconnecting:
		bSpeaking = false;
		SetConnectionState(EAvatarLinkConnectionState::Reconnecting,
			FString::Printf(TEXT("%s (status %d); next attempt in %.1f s"), *Event.Text, Event.Code, Event.Seconds));
		break;
	case EAvatarInboundKind::Failed:
		SetConnectionState(EAvatarLinkConnectionState::Failed, FString::Printf(TEXT("%s (status %d)"), *Event.Text, Event.Code));
		break;
	}
}

void UAvatarLinkSubsystem::ApplyPlaybackOutput(const AvatarLink::FPlaybackOutput& Output)
{
	if (Output.bRestartVoice)
	{
		// An interrupt cut the voice: the wave cannot drop only the samples past stop_s, a new one starts empty.
		StartVoice(VoiceSampleRate);
	}
	if (!Output.VoiceToQueue.empty())
	{
		QueueVoice(Output.VoiceToQueue.data(), static_cast<int32>(Output.VoiceToQueue.size()));
	}
	PublishPose(Output);
	bSpeaking = Output.bFaceActive;

	// Output is this tick's copy: a handler calling Disconnect does not invalidate it.
	for (const avatarlink::AvatarStreamEvent& Command : Output.Commands)
	{
		switch (Command.kind)
		{
		case avatarlink::AvatarEventKind::kEmotion:
			OnEmotion.Broadcast(FromProto<EAvatarEmotion>(Command.emotion.kind), Command.emotion.intensity, static_cast<float>(Command.emotion.blend_s));
			break;
		case avatarlink::AvatarEventKind::kGesture:
			OnGesture.Broadcast(ToFString(Command.gesture.name), Command.gesture.intensity, static_cast<float>(Command.gesture.duration_s));
			break;
		case avatarlink::AvatarEventKind::kCamera:
			OnCamera.Broadcast(FromProto<EAvatarCameraShot>(Command.camera.shot), ToFString(Command.camera.reason), static_cast<float>(Command.camera.transition_s));
			break;
		case avatarlink::AvatarEventKind::kEnvironment:
		{
			const EAvatarScene Scene = FromProto<EAvatarScene>(Command.environment.scene);
			OnEnvironment.Broadcast(Scene, ToFString(Command.environment.reason));
			SwitchScene(Scene);
			break;
		}
		default:
			break;
		}
	}
	for (const AvatarLink::FTurnEnded& Ended : Output.TurnsEnded)
	{
		OnTurnEnded.Broadcast(ToFString(Ended.TurnId), FromProto<EAvatarTurnEndReason>(Ended.Reason), ToFString(Ended.Detail));
	}
}

void UAvatarLinkSubsystem::SetConnectionState(EAvatarLinkConnectionState State, const FString& Detail)
{
	ConnectionState = State;
	const FText StateText = UEnum::GetDisplayValueAsText(State);
	UE_LOG(LogAvatarLink, Log, TEXT("%s %s"), *StateText.ToString(), *Detail);
	if (LiveLinkSource.IsValid())
	{
		LiveLinkSource->SetStatus(StateText);
	}
	OnConnectionChanged.Broadcast(State, Detail);
}

UAudioComponent* UAvatarLinkSubsystem::VoiceComponent() const
{
	if (UAudioComponent* UserComponent = UserVoiceComponent.Get())
	{
		return UserComponent;
	}
	return OwnVoiceComponent;
}

void UAvatarLinkSubsystem::StartVoice(uint32 SampleRateHz)
{
	StopVoice();
	VoiceSampleRate = SampleRateHz;

	// Mono PCM16 at the stream's rate; the mixer resamples to the device. It never "ends": between turns it plays
	// silence (GeneratePCMData pads an empty queue with zeros) and the playback stops queueing.
	VoiceWave = NewObject<USoundWaveProcedural>(this, NAME_None, RF_Transient);
	VoiceWave->SetSampleRate(SampleRateHz);
	VoiceWave->NumChannels = 1;
	VoiceWave->Duration = INDEFINITELY_LOOPING_DURATION;
	VoiceWave->SoundGroup = SOUNDGROUP_Voice;
	VoiceWave->bLooping = false;
	// Between turns the wave is silent, and a spatialized voice may be far away: a virtualized sound would stop
	// taking samples, and the face (which follows the samples taken) would freeze.
	VoiceWave->VirtualizationMode = EVirtualizationMode::PlayWhenSilent;

	UAudioComponent* Component = VoiceComponent();
	if (Component == nullptr)
	{
		// 2D, kept across level travel (an Environment event may open another level), reused for later waves.
		OwnVoiceComponent = UGameplayStatics::CreateSound2D(GetGameInstance(), VoiceWave, 1.0f, 1.0f, 0.0f, nullptr, true, false);
		Component = OwnVoiceComponent;
	}
	const double NowSeconds = FPlatformTime::Seconds();
	SilentAvailableFrames = 0.0;
	SilentLastSeconds = NowSeconds;
	LastVoiceAvailable = 0;
	LastVoiceProgressSeconds = NowSeconds;
	bSilentVoice = Component == nullptr;
	if (bSilentVoice)
	{
		// CreateSound2D returns null without an audio device (-nosound, dedicated servers).
		UE_LOG(LogAvatarLink, Warning, TEXT("No audio device: the avatar's voice is not heard; its clock follows the wall clock."));
		return;
	}
	Component->SetSound(VoiceWave);
	Component->Play();
}

void UAvatarLinkSubsystem::StopVoice()
{
	if (VoiceWave != nullptr)
	{
		if (UAudioComponent* Component = VoiceComponent())
		{
			Component->Stop();
		}
	}
	VoiceWave = nullptr;
	bSilentVoice = false;
}

int64 UAvatarLinkSubsystem::VoiceAvailableFrames(double NowSeconds)
{
	if (VoiceWave == nullptr && !bSilentVoice)
	{
		return 0;
	}
	if (!bSilentVoice)
	{
		// Bytes queued with QueueAudio that the mixer has not taken yet (mono PCM16: 2 bytes a sample).
		const int64 Available = VoiceWave->GetAvailableAudioByteCount() / static_cast<int64>(sizeof(int16));
		const bool bPaused = UGameplayStatics::IsGamePaused(GetGameInstance());
		if (Available > 0 && Available == LastVoiceAvailable && !bPaused)
		{
			if (NowSeconds - LastVoiceProgressSeconds > StalledVoiceSeconds)
			{
				UE_LOG(LogAvatarLink, Warning, TEXT("The voice wave has not been played for %.0f s (was its audio component destroyed?): continuing on the wall clock."), StalledVoiceSeconds);
				bSilentVoice = true;
				SilentAvailableFrames = static_cast<double>(Available);
				SilentLastSeconds = NowSeconds;
				return Available;
			}
		}
		else
		{
			LastVoiceProgressSeconds = NowSeconds;
		}
		LastVoiceAvailable = Available;
		return Available;
	}
	// No device: take samples at the stream's rate, as a mixer would.
	SilentAvailableFrames = FMath::Max(0.0, SilentAvailableFrames - (NowSeconds - SilentLastSeconds) * static_cast<double>(VoiceSampleRate));
	SilentLastSeconds = NowSeconds;
	return static_cast<int64>(SilentAvailableFrames);
}

void UAvatarLinkSubsystem::QueueVoice(const int16* Samples, int32 NumSamples)
{
	if (bSilentVoice)
	{
		SilentAvailableFrames += static_cast<double>(NumSamples);
		return;
	}
	if (VoiceWave != nullptr)
	{
		// PCM16LE: every platform Unreal runs on is little-endian.
		VoiceWave->QueueAudio(reinterpret_cast<const uint8*>(Samples), NumSamples * static_cast<int32>(sizeof(int16)));
	}
}

void UAvatarLinkSubsystem::PublishPose(const AvatarLink::FPlaybackOutput& Output)
{
	if (!LiveLinkSource.IsValid())
	{
		return;
	}
	const UAvatarLinkSettings* Settings = GetDefault<UAvatarLinkSettings>();
	CurveValues.SetNumUninitialized(FAvatarLinkSource::NumProperties);
	for (int32 Index = 0; Index < avatarlink::kNumBlendshapes; ++Index)
	{
		CurveValues[Index] = FMath::Clamp(Output.Pose.weights[static_cast<size_t>(Index)], 0.0f, 1.0f);
	}
	// Live Link Face sends head rotation as degrees / 180 (-1..1).
	CurveValues[FAvatarLinkSource::HeadYawIndex] = (Settings->bInvertHeadYaw ? -1.0f : 1.0f) * Output.Pose.head_yaw_deg / 180.0f;
	CurveValues[FAvatarLinkSource::HeadPitchIndex] = (Settings->bInvertHeadPitch ? -1.0f : 1.0f) * Output.Pose.head_pitch_deg / 180.0f;
	CurveValues[FAvatarLinkSource::HeadRollIndex] = (Settings->bInvertHeadRoll ? -1.0f : 1.0f) * Output.Pose.head_roll_deg / 180.0f;
	LiveLinkSource->PushFrame(CurveValues);
}

void UAvatarLinkSubsystem::SwitchScene(EAvatarScene Scene)
{
	const UAvatarLinkSettings* Settings = GetDefault<UAvatarLinkSettings>();
	if (Settings->SceneSwitch == EAvatarSceneSwitch::None || Scene == EAvatarScene::Unknown)
	{
		return;
	}
	const TSoftObjectPtr<UWorld>* Level = Settings->SceneLevels.Find(Scene);
	if (Level == nullptr || Level->IsNull())
	{
		UE_LOG(LogAvatarLink, Verbose, TEXT("No level set for scene %s."), *UEnum::GetDisplayValueAsText(Scene).ToString());
		return;
	}
	UWorld* World = GetGameInstance() != nullptr ? GetGameInstance()->GetWorld() : nullptr;
	if (World == nullptr || (Scene == CurrentScene && (SceneLevel.IsValid() || Settings->SceneSwitch == EAvatarSceneSwitch::OpenLevel)))
	{
		return;
	}
	CurrentScene = Scene;
	if (Settings->SceneSwitch == EAvatarSceneSwitch::OpenLevel)
	{
		// The subsystem, the stream and the voice survive the travel; the new level brings its own avatar, which
		// picks up the Live Link subject again.
		UGameplayStatics::OpenLevelBySoftObjectPtr(World, *Level);
		return;
	}
	if (ULevelStreamingDynamic* Previous = SceneLevel.Get())
	{
		Previous->SetIsRequestingUnloadAndRemoval(true);
	}
	bool bSuccess = false;
	SceneLevel = ULevelStreamingDynamic::LoadLevelInstanceBySoftObjectPtr(World, *Level, FVector::ZeroVector, FRotator::ZeroRotator, bSuccess);
	if (!bSuccess)
	{
		UE_LOG(LogAvatarLink, Warning, TEXT("Could not stream in %s for scene %s."), *Level->ToString(), *UEnum::GetDisplayValueAsText(Scene).ToString());
	}
}

void UAvatarLinkSubsystem::RegisterLiveLinkSource(const FString& Target)
{
	IModularFeatures& Features = IModularFeatures::Get();
	if (!Features.IsModularFeatureAvailable(ILiveLinkClient::ModularFeatureName))
	{
		UE_LOG(LogAvatarLink, Warning, TEXT("Live Link is not available (enable the Live Link plugin): the face is not published."));
		return;
	}
	const UAvatarLinkSettings* Settings = GetDefault<UAvatarLinkSettings>();
	ILiveLinkClient& LiveLinkClient = Features.GetModularFeature<ILiveLinkClient>(ILiveLinkClient::ModularFeatureName);
	LiveLinkSource = MakeShared<FAvatarLinkSource>(Settings->LiveLinkSubjectName, FText::FromString(Target));
	LiveLinkClient.AddSource(LiveLinkSource);
}

void UAvatarLinkSubsystem::UnregisterLiveLinkSource()
{
	if (!LiveLinkSource.IsValid())
	{
		return;
	}
	IModularFeatures& Features = IModularFeatures::Get();
	if (Features.IsModularFeatureAvailable(ILiveLinkClient::ModularFeatureName))
	{
		Features.GetModularFeature<ILiveLinkClient>(ILiveLinkClient::ModularFeatureName).RemoveSource(LiveLinkSource);
	}
	LiveLinkSource.Reset();
}
