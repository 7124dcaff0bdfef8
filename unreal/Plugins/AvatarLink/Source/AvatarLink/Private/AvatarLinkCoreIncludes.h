// The UE-free core's headers (../AvatarLinkCore/Public) for Unreal code, as third-party code: the core is checked
// with its own, different warning set by its CMake build. Then the playback built on them (it wraps them itself).
#pragma once

#include "CoreMinimal.h"

THIRD_PARTY_INCLUDES_START
#include "AvatarTypes.h"  // and VisemeTables.generated.h: kArkitNames
#include "StreamDecoder.h"
THIRD_PARTY_INCLUDES_END

#include "AvatarPlayback.h"
