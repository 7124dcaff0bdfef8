// gRPC C++ and the generated almquist.v1 API, for the files that talk to the server (AvatarStreamClient.cpp).
// Nothing outside Private/ sees these types.
#pragma once

#include "CoreMinimal.h"

#include "Grpc/AvatarLinkGrpcPrologue.h"
#include <grpcpp/grpcpp.h>
#include "almquist/v1/conversation.grpc.pb.h"
#include "almquist/v1/conversation.pb.h"
#include "Grpc/AvatarLinkGrpcEpilogue.h"
