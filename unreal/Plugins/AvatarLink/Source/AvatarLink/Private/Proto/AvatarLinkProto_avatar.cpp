// Compiles protoc's output for protos/almquist/v1/avatar.proto (ThirdParty/AlmquistProto, skipped by UBT via
// .ubtignore) as third-party code. Regenerate it whenever the .proto changes; see unreal/README.md.
#include "CoreMinimal.h"

#include "Grpc/AvatarLinkGrpcPrologue.h"
#include "almquist/v1/avatar.pb.cc"
#include "Grpc/AvatarLinkGrpcEpilogue.h"
