// Compiles ../AvatarLinkCore/Private/JitterBuffer.cpp, the UE-free core (also built and tested alone with CMake),
// into this module. Its own warning set is checked by its CMake build; here it is third-party code.
#include "CoreMinimal.h"

THIRD_PARTY_INCLUDES_START
#include "JitterBuffer.cpp"
THIRD_PARTY_INCLUDES_END
