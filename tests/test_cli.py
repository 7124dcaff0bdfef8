"""The `almquist` command as a user runs it, against the deployed local profile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.serve

ALMQUIST = str(Path(sys.executable).with_name("almquist"))


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    import ray

    env = {**os.environ, "COLUMNS": "200"}
    if ray.is_initialized():
        # `almquist status` joins "the" Ray of this machine (address="auto": the newest one started); a test that
        # started another (the chaos test's restart) must not make it read that one: name the stack's own
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    return subprocess.run([ALMQUIST, *args], input=stdin, capture_output=True, text=True, timeout=300, env=env)


def test_ask_streams_an_answer(serve_stack):
    result = run("ask", "Who directed Inception?", "--target", serve_stack.target)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "knowledge -> graph_rag" in result.stderr


def test_ask_reports_bad_input_with_its_status(serve_stack):
    result = run("ask", "hello", "--personality", "pirate", "--target", serve_stack.target)
    assert result.returncode == 2
    assert "INVALID_ARGUMENT" in result.stderr and "unknown personality" in result.stderr


def test_chat_keeps_a_session(serve_stack):
    result = run("chat", "--target", serve_stack.target, stdin="Hello!\nWho directed Inception?\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("you> ") >= 2
    assert "Resume with: almquist chat --session" in result.stderr


def test_status_shows_apps_and_replicas(serve_stack):
    result = run("status")
    assert result.returncode == 0, result.stderr
    for name in ("conversation", "RUNNING", "LLMServer", "ConversationIngress", "HEALTHY"):
        assert name in result.stdout


def test_ask_output_shows_the_sources_before_the_answer(capsys: pytest.CaptureFixture[str]):
    from almquist import cli
    from almquist.v1 import common_pb2, conversation_pb2, knowledge_pb2

    events = [
        conversation_pb2.ServerEvent(turn_started=conversation_pb2.TurnStarted(intent="knowledge", route="graph_rag")),
        conversation_pb2.ServerEvent(citation=knowledge_pb2.Citation(path=["$9.99", "DIRECTED_BY", "Tatia Rosenthal"])),
        conversation_pb2.ServerEvent(token=conversation_pb2.AnswerToken(text="Tatia Rosenthal.")),
        conversation_pb2.ServerEvent(turn_end=common_pb2.TurnEnd(reason=common_pb2.TURN_END_REASON_COMPLETED)),
    ]
    last = cli._print_stream(iter(events))
    assert last is not None and last.HasField("turn_end")
    captured = capsys.readouterr()
    assert "source: $9.99 | DIRECTED_BY | Tatia Rosenthal" in captured.err
    assert captured.out.strip() == "Tatia Rosenthal."


def test_dashboard_writes_the_committed_grafana_json(tmp_path: Path):
    from almquist import metrics

    target = tmp_path / "almquist.json"
    result = run("dashboard", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_text() == metrics.DASHBOARD_FILE.read_text()


def test_a_failed_deployment_names_the_deployment_its_error_and_what_to_do():
    from ray.serve._private.common import DeploymentStatus, DeploymentStatusTrigger
    from ray.serve.schema import ApplicationStatus, ApplicationStatusOverview, DeploymentStatusOverview

    from almquist.runtime import failure_message

    traceback = (
        "The deployment failed to start 3 times in a row. This may be due to a problem with its constructor or "
        "initial health check failing. See controller logs for details. Error:\n"
        "Traceback (most recent call last):\n"
        '  File "/work/main/deployments/espeak.py", line 122, in __init__\n'
        "ray.exceptions.RayTaskError(EspeakError): ray::ServeReplica:conversation:TTS.initialize_and_get_metadata()\n"
        "deployments.espeak.EspeakError: libespeak-ng is not installed (Debian: apt-get install libespeak-ng1)\n"
    )

    def deployment(status: DeploymentStatus, message: str = "") -> DeploymentStatusOverview:
        return DeploymentStatusOverview(status, DeploymentStatusTrigger.UNSPECIFIED, {}, message)

    app = ApplicationStatusOverview(
        ApplicationStatus.DEPLOY_FAILED,
        "Failed to update the deployments ['TTS'].",
        0.0,
        {
            "TTS": deployment(DeploymentStatus.DEPLOY_FAILED, traceback),
            "LLMServer": deployment(DeploymentStatus.HEALTHY),
        },
    )
    message = failure_message("conversation", app)
    assert "TTS: EspeakError: libespeak-ng is not installed (Debian: apt-get install libespeak-ng1)" in message
    assert "LLMServer" not in message and "Traceback" not in message
    assert message.startswith("application 'conversation' failed to deploy (DEPLOY_FAILED):\n")
    assert "run the same command again" in message
