"""AvatarLinkCore, the UE-free C++ core of the UE5 plugin: builds with CMake and passes its unit tests (decoder,
jitter buffer, interpolation, viseme blending); its public headers stay includable from Unreal; the committed viseme
tables equal graphs/visemes.py's."""

from __future__ import annotations

import re
import subprocess

from graphs import visemes
from tests.avatarlink_build import CORE_DIR, GENERATED_HEADER, REPO_ROOT, build

SUITES = ("decoder", "jitter", "interpolation", "viseme")


def test_core_unit_tests_pass() -> None:
    build_dir = build(["avatarlink_core_tests"])
    result = subprocess.run(
        ["ctest", "--test-dir", str(build_dir), "--output-on-failure", "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"100% tests passed, 0 tests failed out of {len(SUITES)}" in output, output
    # every suite ran its tests (ctest runs the executable once per suite; an empty suite would fail there)
    listing = subprocess.run(
        [str(build_dir / "avatarlink_core_tests")], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "FAIL" not in listing, listing
    for suite in SUITES:
        assert len(re.findall(rf"^PASS {suite}_", listing, re.MULTILINE)) >= 3, listing


def test_committed_viseme_header_matches_the_tables() -> None:
    regenerate = f"python -m graphs.visemes --cpp > {GENERATED_HEADER.relative_to(REPO_ROOT)}"
    assert GENERATED_HEADER.read_text() == visemes.cpp_header(), regenerate


def test_public_headers_need_neither_unreal_nor_protobuf() -> None:
    """The UE module includes Public/ as it is: standard headers and the core's own only."""
    own = {path.name for path in (CORE_DIR / "Public").glob("*.h")}
    headers = sorted((CORE_DIR / "Public").glob("*.h"))
    assert {"StreamDecoder.h", "JitterBuffer.h", "FaceInterpolation.h", "VisemeBlender.h"} <= own
    for header in headers:
        for included in re.findall(r'^#include\s+[<"]([^>"]+)[>"]', header.read_text(), re.MULTILINE):
            standard = "/" not in included and "." not in included  # <vector>, <cstdint>, ...
            assert standard or included in own, f"{header.name} includes {included}"
