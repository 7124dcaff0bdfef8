"""The UE5 plugin AvatarLink, checked without Unreal: Unreal cannot be installed here, so nothing below compiles
the Unreal module. These are structural checks of what a UE build depends on, plus one behavioural test of the
module's Unreal-free playback logic:

- the .uplugin is valid JSON and names exactly the modules that exist (a folder with its *.Build.cs);
- every `#include "..."` in Source/AvatarLink resolves to a file of the plugin, to protoc's output for a proto that
  exists (generated at build time, see unreal/README.md), or to an Unreal header of an allow-listed folder;
- UHT's rules: a header with reflected types includes its own `.generated.h`, last;
- the UE-free core and the generated protobuf code are compiled through wrappers, one per source, none missing;
- the 52 Live Link curve names come from the generated table (`kArkitNames`), not from a second list;
- the Build.cs wires gRPC, protobuf and the engine modules the code uses;
- FAvatarPlayback (Private/AvatarPlayback.*, no Unreal types) is compiled with g++ together with AvatarLinkCore's
  sources and its host tests (HostTests/) run: voice, face, commands and turn ends against a simulated mixer.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from graphs.visemes import ARKIT_NAMES

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO_ROOT / "unreal" / "Plugins" / "AvatarLink"
SOURCE_DIR = PLUGIN_DIR / "Source"
MODULE_DIR = SOURCE_DIR / "AvatarLink"
CORE_DIR = SOURCE_DIR / "AvatarLinkCore"
PROTO_DIR = REPO_ROOT / "protos"
BUILD_CS = MODULE_DIR / "AvatarLink.Build.cs"

# Unreal headers the module may include: by folder inside an engine module's Public/Classes, or by name.
ENGINE_INCLUDE_FOLDERS = (
    "Components/",
    "Containers/",
    "Engine/",
    "Features/",
    "HAL/",
    "Kismet/",
    "Math/",
    "Misc/",
    "Modules/",
    "Roles/",
    "Sound/",
    "Subsystems/",
    "Templates/",
    "UObject/",
    "Windows/",
)
ENGINE_HEADERS = {"CoreMinimal.h", "ILiveLinkClient.h", "ILiveLinkSource.h", "LiveLinkTypes.h"}
GENERATED_PROTO_INCLUDE = re.compile(r"^almquist/v1/(\w+)\.(?:grpc\.)?pb\.(?:h|cc)$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
REFLECTED = re.compile(r"^\s*(UCLASS|USTRUCT|UENUM|UINTERFACE)\s*\(", re.MULTILINE)


def module_sources() -> list[Path]:
    return sorted(p for p in MODULE_DIR.rglob("*") if p.suffix in {".h", ".cpp"})


def include_roots(source: Path) -> list[Path]:
    """Where a quoted include is looked up: the including file's folder, then the module's include paths (its
    Public and Private, the core's Public and Private; Build.cs adds the last two)."""
    return [
        source.parent,
        MODULE_DIR / "Public",
        MODULE_DIR / "Private",
        CORE_DIR / "Public",
        CORE_DIR / "Private",
    ]


def build_cs_generated_sources() -> list[str]:
    block = re.search(r"GeneratedSources\s*=\s*\{(.*?)\};", BUILD_CS.read_text(), re.DOTALL)
    assert block, "AvatarLink.Build.cs must list the protoc output it compiles in GeneratedSources"
    return re.findall(r'"([^"]+)"', block.group(1))


def test_uplugin_names_the_modules_that_exist():
    descriptor = json.loads((PLUGIN_DIR / "AvatarLink.uplugin").read_text())
    assert descriptor["FileVersion"] == 3
    listed = {module["Name"]: module for module in descriptor["Modules"]}
    assert "AvatarLink" in listed and listed["AvatarLink"]["Type"] == "Runtime"
    for name in listed:
        assert (SOURCE_DIR / name / f"{name}.Build.cs").is_file(), f"{name} is listed but has no {name}.Build.cs"
    # every module folder (one holding a *.Build.cs) is listed; AvatarLinkCore has none: AvatarLink compiles it
    with_rules = {path.parent.name for path in SOURCE_DIR.glob("*/*.Build.cs")}
    assert with_rules == set(listed), f"modules on disk {with_rules} vs listed {set(listed)}"
    plugins = {plugin["Name"]: plugin for plugin in descriptor["Plugins"]}
    assert plugins["LiveLink"]["Enabled"] is True


def test_every_quoted_include_resolves():
    generated = set(build_cs_generated_sources())
    unresolved = []
    for source in module_sources():
        for included in INCLUDE.findall(source.read_text()):
            if any((root / included).is_file() for root in include_roots(source)):
                continue
            proto = GENERATED_PROTO_INCLUDE.match(included)
            if proto:
                # protoc's output, made at build time: its .proto must exist, and a .cc must be one Build.cs checks
                if not (PROTO_DIR / "almquist" / "v1" / f"{proto.group(1)}.proto").is_file():
                    unresolved.append(f"{source.relative_to(PLUGIN_DIR)}: {included} (no such proto)")
                elif included.endswith(".cc") and included not in generated:
                    unresolved.append(f"{source.relative_to(PLUGIN_DIR)}: {included} (not in GeneratedSources)")
                continue
            if included.endswith(".generated.h"):
                continue  # UHT's output, checked by test_reflected_headers_include_their_generated_header_last
            if included in ENGINE_HEADERS or included.startswith(ENGINE_INCLUDE_FOLDERS):
                continue
            unresolved.append(f"{source.relative_to(PLUGIN_DIR)}: {included}")
    assert not unresolved, "includes that resolve to nothing:\n" + "\n".join(unresolved)


def test_reflected_headers_include_their_generated_header_last():
    headers = [path for path in module_sources() if path.suffix == ".h" and REFLECTED.search(path.read_text())]
    assert {path.name for path in headers} >= {"AvatarLinkSubsystem.h", "AvatarLinkSettings.h", "AvatarLinkTypes.h"}
    for header in headers:
        includes = INCLUDE.findall(header.read_text())
        assert includes and includes[-1] == f"{header.stem}.generated.h", f"{header.name}: {includes}"
        assert header.parent.name == "Public", f"{header.name}: reflected types belong to Public/"


def test_core_and_generated_sources_are_each_compiled_once():
    wrapped_core = []
    for wrapper in sorted((MODULE_DIR / "Private" / "CoreLib").glob("*.cpp")):
        wrapped_core += [name for name in INCLUDE.findall(wrapper.read_text()) if name.endswith(".cpp")]
    core_sources = sorted(path.name for path in (CORE_DIR / "Private").glob("*.cpp"))
    assert sorted(wrapped_core) == core_sources, "each AvatarLinkCore/Private/*.cpp needs exactly one wrapper"

    wrapped_generated = []
    for wrapper in sorted((MODULE_DIR / "Private" / "Proto").glob("*.cpp")):
        wrapped_generated += [name for name in INCLUDE.findall(wrapper.read_text()) if name.endswith(".cc")]
    assert sorted(wrapped_generated) == sorted(build_cs_generated_sources())
    # conversation.proto's imports: every message file the Converse stub needs is compiled
    imports = re.findall(
        r'^import "almquist/v1/(\w+)\.proto";', (PROTO_DIR / "almquist/v1/conversation.proto").read_text(), re.M
    )
    for name in [*imports, "conversation"]:
        assert f"almquist/v1/{name}.pb.cc" in wrapped_generated

    # what the wrappers include must not be compiled by UBT a second time
    assert (MODULE_DIR / "ThirdParty" / ".ubtignore").is_file()
    assert (MODULE_DIR / "HostTests" / ".ubtignore").is_file()
    assert not list(CORE_DIR.glob("*.Build.cs")), "AvatarLinkCore would become a second module compiling its tests"


def test_live_link_curves_come_from_the_generated_table():
    source = (MODULE_DIR / "Private" / "AvatarLinkSource.cpp").read_text()
    assert re.search(r"for\s*\(\s*const char\*\s*\w+\s*:\s*avatarlink::kArkitNames\s*\)", source)
    for head in ("HeadYaw", "HeadPitch", "HeadRoll"):
        assert f'TEXT("{head}")' in source
    # no second, hand-written list: the source spells none, no other file more than the odd name it looks up
    names = {name.lower() for name in ARKIT_NAMES}
    for path in module_sources():
        literals = {literal.lower() for literal in re.findall(r'"([A-Za-z]+)"', path.read_text())}
        allowed = 0 if path.name == "AvatarLinkSource.cpp" else 2
        assert len(literals & names) <= allowed, f"{path.name} spells ARKit names itself: {sorted(literals & names)}"
    # and the table the module compiles against is graphs/visemes.py's
    table = (CORE_DIR / "Public" / "VisemeTables.generated.h").read_text()
    block = re.search(r"kArkitNames = \{(.*?)\};", table, re.DOTALL)
    assert block and re.findall(r'"(\w+)"', block.group(1)) == list(ARKIT_NAMES)


def test_build_cs_wires_grpc_protobuf_and_engine_modules():
    rules = BUILD_CS.read_text()
    for module in ("Core", "CoreUObject", "Engine", "LiveLinkInterface", "LiveLink", "AudioMixer", "DeveloperSettings"):
        assert f'"{module}"' in rules, module
    assert "PublicAdditionalLibraries" in rules
    assert '"grpc++"' in rules and '"protobuf"' in rules  # the libraries it insists on finding
    assert "AVATARLINK_GRPC_ROOT" in rules and "AVATARLINK_PROTO_DIR" in rules
    assert "GOOGLE_PROTOBUF_NO_RTTI" in rules
    assert 'AddEngineThirdPartyPrivateStaticDependencies(Target, "OpenSSL", "zlib")' in rules
    assert "bUseUnity = false" in rules


def test_playback_host_tests_pass(tmp_path: Path):
    compiler = shutil.which("g++")
    assert compiler, "g++ is needed (Debian: g++), as for AvatarLinkCore's CMake build"
    core_sources = [
        CORE_DIR / "Private" / name
        for name in ("AvatarTypes.cpp", "FaceInterpolation.cpp", "JitterBuffer.cpp", "VisemeBlender.cpp")
    ]
    binary = tmp_path / "avatar_playback_tests"
    command = [
        compiler, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Wshadow", "-fno-exceptions", "-fno-rtti",
        f"-I{CORE_DIR / 'Public'}", f"-I{MODULE_DIR / 'Private'}",
        *map(str, core_sources), str(MODULE_DIR / "Private" / "AvatarPlayback.cpp"),
        str(MODULE_DIR / "HostTests" / "AvatarPlaybackTests.cpp"), "-o", str(binary),
    ]  # fmt: skip
    build = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stderr[:4000]  # the first errors say what is wrong
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-6000:]
    assert re.search(r"^\d+ checks, 0 failed, 0 of 5 tests failed$", run.stdout, re.MULTILINE), run.stdout
