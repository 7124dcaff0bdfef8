"""Builds AvatarLinkCore (the UE-free C++ core of the UE5 plugin, its unit tests and avatar_client) with CMake for
the tests that run them.

The build folder is the plugin's `Intermediate/` (ignored by git, where Unreal puts its own build output too), kept
between runs so that a second run only rebuilds what changed. A file lock serialises builds of concurrent pytest
processes.
"""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE_DIR = REPO_ROOT / "unreal" / "Plugins" / "AvatarLink" / "Source" / "AvatarLinkCore"
BUILD_DIR = REPO_ROOT / "unreal" / "Plugins" / "AvatarLink" / "Intermediate" / "AvatarLinkCoreCMake"
GENERATED_HEADER = CORE_DIR / "Public" / "VisemeTables.generated.h"


class BuildError(RuntimeError):
    """CMake failed; the message ends with the tail of its output."""


def _run(command: Sequence[str], timeout_s: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        raise BuildError(f"{' '.join(command)} failed ({result.returncode}):\n{output}")


def build(targets: Sequence[str] = (), build_dir: Path | None = None, jobs: int = 2) -> Path:
    """Configures and builds `targets` (all when empty) in Release into `build_dir` (BUILD_DIR by default);
    returns the build folder."""
    build_dir = build_dir or BUILD_DIR
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # configuring again is quick and repairs a folder left half-configured by an interrupted run
        _run(["cmake", "-S", str(CORE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"], timeout_s=120)
        command = ["cmake", "--build", str(build_dir), f"-j{jobs}"]
        for target in targets:
            command += ["--target", target]
        _run(command, timeout_s=900)
    return build_dir
