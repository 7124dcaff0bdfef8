"""The install step's system-package check (almquist/system_packages.py): a missing library stops `make run` with
the one command that installs it, or installs it where we may; this machine (CI's, after its install) lacks none."""

from __future__ import annotations

import subprocess
import sys

from almquist.system_packages import RUN_NEEDS, TEST_NEEDS, Machine, ensure, main, missing


def machine_without(library: str = "", command: str = "", root: bool = False, sudo: bool = False) -> Machine:
    """This machine as it is, less one library or command; `runs` records what it was asked to run."""
    real = Machine()
    ran: list[list[str]] = []

    def which(name: str) -> str | None:
        if name == command or (name == "sudo" and not sudo):
            return None
        return real.which(name) or (f"/usr/bin/{name}" if name in ("apt-get", "sudo") else None)

    def run(argv: list[str]) -> int:
        ran.append(argv)
        return 0

    machine = Machine(
        find_library=lambda name: None if name == library else real.find_library(name),
        which=which,
        is_root=root,
        run=run,
    )
    machine.ran = ran  # type: ignore[attr-defined]
    return machine


def test_a_missing_library_without_root_or_sudo_names_the_command_and_fails():
    said: list[str] = []
    machine = machine_without(library="espeak-ng")
    assert ensure(RUN_NEEDS, machine, say=said.append) == 1
    text = "\n".join(said)
    assert "missing: libespeak-ng (the local profile's voice)" in text
    assert "apt-get install -y --no-install-recommends espeak-ng-data libespeak-ng1" in text
    assert machine.ran == []  # type: ignore[attr-defined]


def test_as_root_it_installs_the_missing_packages_with_apt_get():
    said: list[str] = []
    machine = machine_without(library="espeak-ng", root=True)
    # The fake install cannot add the library, so the check after it still fails, and says so.
    assert ensure(RUN_NEEDS, machine, say=said.append) == 1
    assert machine.ran == [  # type: ignore[attr-defined]
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "espeak-ng-data", "libespeak-ng1"],
    ]
    assert any("still missing after the install: libespeak-ng" in line for line in said)


def test_with_sudo_it_installs_through_sudo():
    machine = machine_without(command="npm", sudo=True)
    ensure(RUN_NEEDS, machine, say=lambda _: None)
    assert machine.ran[1][:3] == ["sudo", "apt-get", "install"]  # type: ignore[attr-defined]
    assert machine.ran[1][-2:] == ["nodejs", "npm"]  # type: ignore[attr-defined]


def test_check_only_installs_nothing():
    machine = machine_without(command="chromium", root=True)
    assert main(["test", "--check"], machine) == 1
    assert machine.ran == []  # type: ignore[attr-defined]


def test_this_machine_has_what_make_test_needs():
    assert [need.name for need in missing(TEST_NEEDS, Machine())] == []
    result = subprocess.run(
        [sys.executable, "-m", "almquist.system_packages", "test", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
