// Compiles grpc_cpp_plugin's output for the almquist.v1.Conversation service (the Converse stub) as third-party
// code. The Knowledge and Media services' stubs are not needed here.
#include "CoreMinimal.h"

#include "Grpc/AvatarLinkGrpcPrologue.h"
#include "almquist/v1/conversation.grpc.pb.cc"
#include "Grpc/AvatarLinkGrpcEpilogue.h"
