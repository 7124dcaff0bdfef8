// Compiles ../AvatarLinkCore/Private/StreamDecoder.cpp (ServerEvent -> avatarlink::AvatarStreamEvent) into this
// module. It includes the generated protobuf headers, hence the gRPC/protobuf region rather than a bare
// THIRD_PARTY_INCLUDES_START.
#include "CoreMinimal.h"

#include "Grpc/AvatarLinkGrpcPrologue.h"
#include "StreamDecoder.cpp"
#include "Grpc/AvatarLinkGrpcEpilogue.h"
