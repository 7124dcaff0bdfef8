// The AvatarLink runtime module: gRPC client of almquist.v1.Conversation/Converse, Live Link face source, voice
// playback, Blueprint subsystem. It also compiles the UE-free core (../AvatarLinkCore/Private, see
// Private/CoreLib/) and protoc's output for protos/almquist/v1 (see Private/Proto/), both through one-line
// wrapper .cpp files that include them between THIRD_PARTY_INCLUDES_START/END.
//
// Third-party inputs (nothing of them is committed; unreal/README.md says how to build them):
//   gRPC + protobuf + abseil (+ re2, upb, utf8_range, address_sorting), static, built with this engine's toolchain:
//     $AVATARLINK_GRPC_ROOT, or ThirdParty/grpc/<Platform>   (an install prefix: include/ and lib/)
//   protoc + grpc_cpp_plugin output for protos/almquist/v1/*.proto, made with the same protobuf release as the libs:
//     $AVATARLINK_PROTO_DIR, or ThirdParty/AlmquistProto     (holding almquist/v1/*.pb.{h,cc}, *.grpc.pb.{h,cc})
// ThirdParty/ carries a .ubtignore so UBT neither compiles the .pb.cc files directly (the wrappers do) nor scans
// thousands of gRPC headers for reflection markup.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using UnrealBuildTool;

// System.IO.File/Directory are spelled out: ModuleRules has members named File and Directory.
public class AvatarLink : ModuleRules
{
	// protoc output the module compiles: every message file conversation.proto imports, and its service stub.
	static readonly string[] GeneratedSources =
	{
		"almquist/v1/common.pb.cc",
		"almquist/v1/avatar.pb.cc",
		"almquist/v1/knowledge.pb.cc",
		"almquist/v1/media.pb.cc",
		"almquist/v1/conversation.pb.cc",
		"almquist/v1/conversation.grpc.pb.cc",
	};

	// Static libraries of a gRPC install that must not be linked: the *_unsecure variants duplicate grpc/grpc++,
	// protobuf-lite duplicates protobuf, protoc and the plugin support are the code generator, and OpenSSL/zlib
	// come from the engine (linking a second copy clashes in monolithic builds).
	// Install Release libraries only: protobuf's Debug ones ("protobufd") would be linked next to them.
	static readonly string[] ExcludedLibraryStems =
	{
		"grpc_unsecure", "grpc++_unsecure", "protobuf-lite", "protoc", "grpc_plugin_support", "grpc++_reflection",
		"ssl", "crypto", "z", "zlib", "zlibstatic",
	};

	public AvatarLink(ReadOnlyTargetRules Target) : base(Target)
	{
		PCHUsage = PCHUsageMode.UseExplicitOrSharedPCHs;
		// Each core file and each protoc output is its own translation unit: a unity build would merge their
		// anonymous namespaces (and protobuf's file-level statics) into one and break them.
		bUseUnity = false;

		PublicDependencyModuleNames.AddRange(new string[]
		{
			"Core",
			"CoreUObject",
			"Engine",
			"DeveloperSettings", // UAvatarLinkSettings (Project Settings > Plugins > AvatarLink), a public header
		});
		PrivateDependencyModuleNames.AddRange(new string[]
		{
			"LiveLinkInterface", // ILiveLinkSource, ILiveLinkClient, ULiveLinkBasicRole
			"LiveLink",          // the Live Link client itself (plugin enabled in AvatarLink.uplugin)
			"AudioMixer",        // the renderer of the procedural voice (USoundWaveProcedural feeds it)
		});

		// gRPC is built against the engine's OpenSSL and zlib (gRPC_SSL_PROVIDER=package, gRPC_ZLIB_PROVIDER=package).
		AddEngineThirdPartyPrivateStaticDependencies(Target, "OpenSSL", "zlib");

		string CoreDir = Path.GetFullPath(Path.Combine(ModuleDirectory, "..", "AvatarLinkCore"));
		PrivateIncludePaths.Add(Path.Combine(ModuleDirectory, "Private"));
		PrivateIncludePaths.Add(Path.Combine(CoreDir, "Public"));
		PrivateIncludePaths.Add(Path.Combine(CoreDir, "Private")); // the CoreLib wrappers include the .cpp files

		string ThirdPartyDir = Path.Combine(ModuleDirectory, "ThirdParty");
		string ProtoDir = DirectoryFromEnvironment("AVATARLINK_PROTO_DIR", Path.Combine(ThirdPartyDir, "AlmquistProto"));
		string GrpcRoot = DirectoryFromEnvironment("AVATARLINK_GRPC_ROOT", Path.Combine(ThirdPartyDir, "grpc", Target.Platform.ToString()));

		PrivateIncludePaths.Add(ProtoDir);
		string GrpcInclude = Path.Combine(GrpcRoot, "include");
		string GrpcLib = Path.Combine(GrpcRoot, "lib");
		PrivateIncludePaths.Add(GrpcInclude);

		if (Target.Platform == UnrealTargetPlatform.Win64)
		{
			// gRPC's Windows transport and address resolution.
			PublicSystemLibraries.AddRange(new string[] { "ws2_32.lib", "crypt32.lib", "iphlpapi.lib", "dbghelp.lib", "bcrypt.lib" });
		}

		// Unreal compiles without RTTI: protobuf's headers must not use dynamic_cast/typeid. (gRPC detects the missing
		// exception support by itself; PROTOBUF_USE_DLLS stays undefined because the libraries are static.)
		PrivateDefinitions.Add("GOOGLE_PROTOBUF_NO_RTTI=1");

		foreach (string Generated in GeneratedSources)
		{
			if (!System.IO.File.Exists(Path.Combine(ProtoDir, Generated)))
			{
				MissingInput(Target, String.Format(
					"{0} is missing. Generate the C++ of protos/almquist/v1 into {1} (or set AVATARLINK_PROTO_DIR) with the " +
					"protoc and grpc_cpp_plugin of the gRPC install in {2}; see unreal/README.md, section 2.",
					Generated, ProtoDir, GrpcRoot));
				return;
			}
		}
		if (!System.IO.File.Exists(Path.Combine(GrpcInclude, "grpcpp", "grpcpp.h")) || !System.IO.Directory.Exists(GrpcLib))
		{
			MissingInput(Target, String.Format(
				"no gRPC install at {0} (expected include/grpcpp/grpcpp.h and lib/). Build gRPC and protobuf as static " +
				"libraries with this engine's toolchain and install them there, or set AVATARLINK_GRPC_ROOT; see " +
				"unreal/README.md, section 1.", GrpcRoot));
			return;
		}

		string LibraryExtension = Target.Platform == UnrealTargetPlatform.Win64 ? ".lib" : ".a";
		List<string> Libraries = System.IO.Directory.GetFiles(GrpcLib, "*" + LibraryExtension)
			.Where(LibraryPath => !ExcludedLibraryStems.Contains(LibraryStem(LibraryPath), StringComparer.OrdinalIgnoreCase))
			.OrderBy(LibraryPath => LibraryPath, StringComparer.Ordinal)
			.ToList();
		if (!Libraries.Any(LibraryPath => LibraryStem(LibraryPath) == "grpc++")
			|| !Libraries.Any(LibraryPath => LibraryStem(LibraryPath) == "protobuf"))
		{
			MissingInput(Target, String.Format(
				"{0} lacks the \"grpc++\" or \"protobuf\" static library (*{1}); see unreal/README.md, section 1.",
				GrpcLib, LibraryExtension));
			return;
		}
		// On Linux UBT passes static libraries inside --start-group/--end-group, and MSVC's linker searches every
		// library, so the (alphabetical) order does not matter.
		PublicAdditionalLibraries.AddRange(Libraries);
	}

	// A build cannot go on without gRPC or the generated stubs: stop with what to do. Generating project files only
	// warns, so that the IDE project can be made before gRPC is built.
	static void MissingInput(ReadOnlyTargetRules Target, string Message)
	{
		if (Target.bGenerateProjectFiles)
		{
			Console.WriteLine("Warning: AvatarLink: " + Message);
			return;
		}
		throw new BuildException("AvatarLink: " + Message);
	}

	// A directory named by an environment variable, else the default; an existing variable must name a directory.
	static string DirectoryFromEnvironment(string Variable, string DefaultDirectory)
	{
		string Value = Environment.GetEnvironmentVariable(Variable);
		if (String.IsNullOrEmpty(Value))
		{
			return DefaultDirectory;
		}
		if (!System.IO.Directory.Exists(Value))
		{
			throw new BuildException("AvatarLink: {0}={1} is not a directory.", Variable, Value);
		}
		return Path.GetFullPath(Value);
	}

	// "libgrpc++.a" -> "grpc++", "absl_base.lib" -> "absl_base", "libprotobuf.lib" -> "protobuf", "libssl.lib" -> "ssl".
	static string LibraryStem(string LibraryPath)
	{
		string Stem = Path.GetFileNameWithoutExtension(LibraryPath);
		return Stem.StartsWith("lib", StringComparison.Ordinal) && Stem.Length > 3 ? Stem.Substring(3) : Stem;
	}
}
