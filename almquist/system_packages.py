"""The Debian packages Almquist needs beside what pip installs: checked, installed, or named in one command.

In: what the machine has (shared libraries, commands, Python modules), whether we are root or have sudo.
Out: nothing to do; or `apt-get install` run for the missing packages; or, where we may not install, the one
command to run and exit status 1, so `make run` stops before it starts Ray rather than failing a deployment later.

Standard library only: `make install` runs it with the system Python before the virtualenv exists.
`python -m almquist.system_packages run|test [--check]`: `run` is what `make run` (the local profile) needs,
`test` adds what `make test` needs (compilers and gRPC C++ for unreal/, chromium for the browser test, ...).
"""

from __future__ import annotations

import argparse
import ctypes.util
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Need:
    """One thing the system must provide: how to find it, which Debian packages provide it, and why we need it."""

    name: str
    kind: str  # "library" (ctypes.util.find_library), "command" (on PATH) or "module" (this Python imports it)
    target: str
    packages: tuple[str, ...]
    why: str


RUN_NEEDS = (
    Need("libespeak-ng", "library", "espeak-ng", ("libespeak-ng1", "espeak-ng-data"), "the local profile's voice"),
    Need("python3 venv", "module", "ensurepip", ("python3-venv",), "the .venv that make install creates"),
    Need("npm", "command", "npm", ("nodejs", "npm"), "the browser avatar's three.js (web/setup.sh)"),
)
TEST_NEEDS = (
    *RUN_NEEDS,
    Need("espeak-ng", "command", "espeak-ng", ("espeak-ng",), "speech the tests say"),
    Need("C++ compiler", "command", "g++", ("g++", "make"), "AvatarLinkCore (unreal/)"),
    Need("cmake", "command", "cmake", ("cmake", "pkg-config"), "AvatarLinkCore (unreal/)"),
    Need(
        "gRPC C++",
        "command",
        "grpc_cpp_plugin",
        ("libgrpc++-dev", "libprotobuf-dev", "protobuf-compiler-grpc"),
        "the C++ avatar client (unreal/)",
    ),
    Need("protoc", "command", "protoc", ("protobuf-compiler",), "the C++ avatar client (unreal/)"),
    Need("chromium", "command", "chromium", ("chromium", "fonts-dejavu-core"), "the browser avatar's test"),
    Need("PostgreSQL", "command", "pg_ctlcluster", ("postgresql",), "the durable store's server backend (tests)"),
    # TLS is off by default, so `make run` does not need it; `almquist up --tls-cert ...` says to install it
    Need("nginx", "command", "nginx", ("nginx",), "the TLS front's tests (almquist/ops/tls_front.py)"),
)
PROFILES = {"run": RUN_NEEDS, "test": TEST_NEEDS}


@dataclass
class Machine:
    """What the checks ask of this machine; a test gives one that lacks something."""

    find_library: Callable[[str], str | None] = ctypes.util.find_library
    which: Callable[[str], str | None] = shutil.which
    has_module: Callable[[str], bool] = field(default=lambda name: importlib.util.find_spec(name) is not None)
    is_root: bool = field(default_factory=lambda: hasattr(os, "geteuid") and os.geteuid() == 0)
    run: Callable[[list[str]], int] = field(default=lambda argv: subprocess.run(argv).returncode)

    def has(self, need: Need) -> bool:
        if need.kind == "library":
            return self.find_library(need.target) is not None
        if need.kind == "command":
            return self.which(need.target) is not None
        return self.has_module(need.target)


def missing(needs: Sequence[Need], machine: Machine) -> list[Need]:
    return [need for need in needs if not machine.has(need)]


def install_commands(packages: Sequence[str], machine: Machine) -> list[list[str]] | None:
    """The apt-get commands that install `packages` here (with sudo when not root), or None when we cannot."""
    if machine.which("apt-get") is None:
        return None
    prefix: list[str] = []
    if not machine.is_root:
        if machine.which("sudo") is None:
            return None
        prefix = ["sudo"]
    apt = [*prefix, "apt-get"]
    return [[*apt, "update", "-qq"], [*apt, "install", "-y", "-qq", "--no-install-recommends", *packages]]


def ensure(
    needs: Sequence[Need], machine: Machine, check_only: bool = False, say: Callable[[str], None] = print
) -> int:
    """0 when every need is met (installing what is missing where we may), else 1 after saying what to run."""
    lacking = missing(needs, machine)
    if not lacking:
        return 0
    packages = sorted({package for need in lacking for package in need.packages})
    for need in lacking:
        say(f"missing: {need.name} ({need.why}); Debian package(s): {' '.join(need.packages)}")
    command = f"apt-get update && apt-get install -y --no-install-recommends {' '.join(packages)}"
    commands = None if check_only else install_commands(packages, machine)
    if commands is None:
        say(f"Install them first (as root, or with sudo), then run the same make command again:\n  {command}")
        return 1
    for argv in commands:
        say(f"$ {' '.join(argv)}")
        if machine.run(argv) != 0:
            say(f"installing the system packages failed; run it yourself, then the make command again:\n  {command}")
            return 1
    still = missing(needs, machine)
    for need in still:
        say(f"still missing after the install: {need.name} (looked for {need.kind} {need.target!r})")
    return 1 if still else 0


def main(argv: list[str] | None = None, machine: Machine | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m almquist.system_packages", description=__doc__)
    parser.add_argument("profile", choices=sorted(PROFILES), help="run: make run's needs; test: make test's too")
    parser.add_argument("--check", action="store_true", help="only check and name what is missing; install nothing")
    args = parser.parse_args(argv)
    return ensure(PROFILES[args.profile], machine or Machine(), check_only=args.check)


if __name__ == "__main__":
    sys.exit(main())
