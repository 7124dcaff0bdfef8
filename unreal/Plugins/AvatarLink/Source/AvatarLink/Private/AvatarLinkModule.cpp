// The AvatarLink module. Everything runs from UAvatarLinkSubsystem; the module only owns the log category.
#include "AvatarLinkLog.h"

#include "Modules/ModuleManager.h"

DEFINE_LOG_CATEGORY(LogAvatarLink);

IMPLEMENT_MODULE(FDefaultModuleImpl, AvatarLink)
