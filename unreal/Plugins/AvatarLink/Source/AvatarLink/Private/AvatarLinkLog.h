// The plugin's log category: `Log LogAvatarLink Verbose` in the console shows the stream's details.
#pragma once

#include "CoreMinimal.h"

DECLARE_LOG_CATEGORY_EXTERN(LogAvatarLink, Log, All);
