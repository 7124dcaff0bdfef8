#include "AvatarLinkSource.h"

#include "AvatarLinkCoreIncludes.h"
#include "AvatarLinkLog.h"
#include "ILiveLinkClient.h"
#include "Misc/App.h"
#include "Roles/LiveLinkBasicRole.h"

#define LOCTEXT_NAMESPACE "AvatarLinkSource"

const int32 FAvatarLinkSource::HeadYawIndex = avatarlink::kNumBlendshapes;
const int32 FAvatarLinkSource::HeadPitchIndex = avatarlink::kNumBlendshapes + 1;
const int32 FAvatarLinkSource::HeadRollIndex = avatarlink::kNumBlendshapes + 2;
const int32 FAvatarLinkSource::NumProperties = avatarlink::kNumBlendshapes + 3;

FAvatarLinkSource::FAvatarLinkSource(FName InSubjectName, const FText& InMachineName)
	: SubjectName(InSubjectName)
	, MachineName(InMachineName)
	, Status(LOCTEXT("Waiting", "Waiting for the stream"))
{
}

TArray<FName> FAvatarLinkSource::MakePropertyNames()
{
	// The one list of ARKit names is the generated table (graphs/visemes.py -> VisemeTables.generated.h), in the
	// order FaceFrame.weights uses; Live Link Face capitalises them (EyeBlinkLeft), and so do MetaHuman's mapping
	// pose assets. (FName compares case-insensitively anyway; the case only shows in the Live Link panel.)
	TArray<FName> Names;
	Names.Reserve(NumProperties);
	for (const char* ArkitName : avatarlink::kArkitNames)
	{
		FString Name(UTF8_TO_TCHAR(ArkitName));
		Name[0] = FChar::ToUpper(Name[0]);
		Names.Add(FName(*Name));
	}
	Names.Add(TEXT("HeadYaw"));
	Names.Add(TEXT("HeadPitch"));
	Names.Add(TEXT("HeadRoll"));
	check(Names.Num() == NumProperties);
	return Names;
}

void FAvatarLinkSource::ReceiveClient(ILiveLinkClient* InClient, FGuid InSourceGuid)
{
	Client = InClient;
	SourceGuid = InSourceGuid;

	FLiveLinkStaticDataStruct StaticData(FLiveLinkBaseStaticData::StaticStruct());
	StaticData.Cast<FLiveLinkBaseStaticData>()->PropertyNames = MakePropertyNames();
	Client->PushSubjectStaticData_AnyThread(FLiveLinkSubjectKey(SourceGuid, SubjectName), ULiveLinkBasicRole::StaticClass(), MoveTemp(StaticData));
	UE_LOG(LogAvatarLink, Log, TEXT("Live Link subject '%s' published (%d curves)."), *SubjectName.ToString(), NumProperties);
}

bool FAvatarLinkSource::IsSourceStillValid() const
{
	return Client != nullptr && !bShutDown;
}

bool FAvatarLinkSource::RequestSourceShutdown()
{
	// No threads of its own: it can go at once.
	bShutDown = true;
	Client = nullptr;
	return true;
}

FText FAvatarLinkSource::GetSourceType() const
{
	return LOCTEXT("SourceType", "AvatarLink");
}

FText FAvatarLinkSource::GetSourceMachineName() const
{
	return MachineName;
}

FText FAvatarLinkSource::GetSourceStatus() const
{
	return Status;
}

void FAvatarLinkSource::PushFrame(const TArray<float>& Values)
{
	if (Client == nullptr || bShutDown)
	{
		return;
	}
	if (Values.Num() != NumProperties)
	{
		UE_LOG(LogAvatarLink, Error, TEXT("Live Link frame with %d values, expected %d: not sent."), Values.Num(), NumProperties);
		return;
	}
	FLiveLinkFrameDataStruct FrameData(FLiveLinkBaseFrameData::StaticStruct());
	FLiveLinkBaseFrameData* Frame = FrameData.Cast<FLiveLinkBaseFrameData>();
	Frame->WorldTime = FLiveLinkWorldTime(FPlatformTime::Seconds());
	const TOptional<FQualifiedFrameTime> SceneTime = FApp::GetCurrentFrameTime();
	if (SceneTime.IsSet())
	{
		Frame->MetaData.SceneTime = SceneTime.GetValue();
	}
	Frame->PropertyValues = Values;
	Client->PushSubjectFrameData_AnyThread(FLiveLinkSubjectKey(SourceGuid, SubjectName), MoveTemp(FrameData));
}

#undef LOCTEXT_NAMESPACE
