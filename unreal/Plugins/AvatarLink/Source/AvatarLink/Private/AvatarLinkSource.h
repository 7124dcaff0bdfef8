// FAvatarLinkSource: the Live Link source that publishes the avatar's face as one subject of the Basic role.
//
// Its property names are the 52 ARKit blendshapes, named like Live Link Face names them (EyeBlinkLeft, ...,
// TongueOut: kArkitNames with the first letter upper-cased), then HeadYaw, HeadPitch, HeadRoll (degrees / 180, as
// Live Link Face sends them). A MetaHuman face Animation Blueprint that takes Live Link Face (a Live Link Pose node
// on the subject, then the ARKit mapping pose asset) therefore animates from it unchanged.
//
// Everything runs on the game thread: Live Link calls ReceiveClient / RequestSourceShutdown / the UI getters there,
// and UAvatarLinkSubsystem pushes a frame every tick.
#pragma once

#include "CoreMinimal.h"
#include "ILiveLinkSource.h"
#include "LiveLinkTypes.h"

class ILiveLinkClient;

class FAvatarLinkSource final : public ILiveLinkSource
{
public:
	// Index of the first head value in a frame (after the 52 blendshapes).
	static const int32 HeadYawIndex;
	static const int32 HeadPitchIndex;
	static const int32 HeadRollIndex;
	static const int32 NumProperties;

	FAvatarLinkSource(FName InSubjectName, const FText& InMachineName);

	// The property names of every frame, in order.
	static TArray<FName> MakePropertyNames();

	//~ Begin ILiveLinkSource
	virtual void ReceiveClient(ILiveLinkClient* InClient, FGuid InSourceGuid) override;
	virtual bool IsSourceStillValid() const override;
	virtual bool RequestSourceShutdown() override;
	virtual FText GetSourceType() const override;
	virtual FText GetSourceMachineName() const override;
	virtual FText GetSourceStatus() const override;
	//~ End ILiveLinkSource

	// Pushes one frame: NumProperties values in MakePropertyNames() order.
	void PushFrame(const TArray<float>& Values);
	void SetStatus(const FText& InStatus) { Status = InStatus; }

private:
	ILiveLinkClient* Client = nullptr;
	FGuid SourceGuid;
	FName SubjectName;
	FText MachineName;
	FText Status;
	bool bShutDown = false;
};
