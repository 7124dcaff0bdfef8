"""`almquist doctor` (almquist/doctor.py): each check fails with what to do when the machine lacks its thing, and on
this machine (CI's, after its install) the local profile has everything it needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from almquist import runtime
from almquist.doctor import Finding, Machine, diagnose
from tests.test_system_packages import machine_without


def quiet_machine(**probes) -> Machine:
    """This machine's real probes, with Ray reported as not running unless a test says otherwise."""
    return Machine(**{"ray_running": lambda: False, **probes})


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.check: finding for finding in findings}


def test_a_missing_library_fails_with_the_command_that_installs_it():
    found = by_check(diagnose(runtime.load_profile("local"), quiet_machine(packages=machine_without("espeak-ng"))))
    row = found["system: libespeak-ng"]
    assert row.status == "fail" and "missing" in row.detail
    assert "apt-get install -y libespeak-ng1 espeak-ng-data" in row.fix


def test_a_taken_port_fails_unless_our_ray_holds_it():
    schema = runtime.load_profile("local", grpc_port=9000)
    taken = lambda port: port != 9000  # noqa: E731
    row = by_check(diagnose(schema, quiet_machine(port_free=taken)))["port 9000 (gRPC)"]
    assert row.status == "fail" and "--grpc-port" in row.fix
    running = Machine(port_free=taken, ray_running=lambda: True, serve_status=lambda: {"conversation": "RUNNING"})
    found = by_check(diagnose(schema, running))
    assert found["port 9000 (gRPC)"].status == "ok"
    assert found["Serve: conversation"] == Finding("Serve: conversation", "ok", "RUNNING")


def test_a_failed_application_and_low_disk_fail_and_low_memory_warns():
    machine = Machine(
        ray_running=lambda: True,
        serve_status=lambda: {"conversation": "DEPLOY_FAILED"},
        disk_free_gib=lambda _: 1.0,
        memory_available_gib=lambda: 2.0,
    )
    found = by_check(diagnose(runtime.load_profile("local"), machine))
    assert found["Serve: conversation"].status == "fail" and "almquist status" in found["Serve: conversation"].fix
    assert found["Serve: avatar_web"].status == "warn"  # not deployed
    assert found["disk"].status == "fail" and "ALMQUIST_CACHE_DIR" in found["disk"].fix
    assert found["memory"].status == "warn"


def test_a_model_the_profile_names_but_the_disk_lacks_fails(tmp_path: Path):
    raw = yaml.safe_load((runtime.PROFILE_DIR / "local.yaml").read_text())
    raw["applications"][0]["args"]["vision"]["detection"] = {"model": str(tmp_path / "owlvit")}
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(raw))
    found = by_check(diagnose(runtime.load_profile(profile), quiet_machine()))
    row = found["model: conversation.vision.detection.model"]
    assert row.status == "fail" and "owlvit" in row.detail
    assert found["model: conversation.llm.model"].status == "ok"  # the packaged SmolLM2
    (tmp_path / "owlvit").mkdir()
    assert by_check(diagnose(runtime.load_profile(profile), quiet_machine()))[row.check].status == "ok"


def test_the_command_prints_one_table_and_passes_here():
    result = subprocess.run(
        [sys.executable, "-m", "almquist.cli", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("system: libespeak-ng", "port 9000 (gRPC)", "disk", "memory", "model: conversation.llm.model"):
        assert check in result.stdout
    assert "Ray auth mode" in result.stdout and "Serve" in result.stdout
