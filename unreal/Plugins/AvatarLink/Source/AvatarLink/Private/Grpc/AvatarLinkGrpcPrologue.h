// Opens a region of gRPC/protobuf code (their headers, or protoc's .pb.cc) inside Unreal code; close it with
// AvatarLinkGrpcEpilogue.h. No include guard on purpose: like Windows/AllowWindowsPlatformTypes.h it is included
// once per region. Include CoreMinimal.h before it.
//
// - Windows: gRPC includes <windows.h>; Unreal's Allow/Hide headers keep its macros out of engine code.
// - Unreal's check()/verify() macros would rewrite identifiers of the same name in abseil and protobuf.
// - THIRD_PARTY_INCLUDES_START silences the engine's stricter warnings (shadowing, #if on undefined macros, ...);
//   MSVC needs a few more for protoc's output (conversions, shadowing, #if on undefined macros).

#if PLATFORM_WINDOWS
#include "Windows/AllowWindowsPlatformTypes.h"
#include "Windows/AllowWindowsPlatformAtomics.h"
#endif

THIRD_PARTY_INCLUDES_START

#if defined(_MSC_VER)
#pragma warning(disable : 4018 4065 4125 4146 4244 4251 4267 4305 4307 4309 4334 4355 4456 4457 4458 4459 4506 4668 4800 4946 4996)
#endif

#pragma push_macro("check")
#undef check
#pragma push_macro("verify")
#undef verify
