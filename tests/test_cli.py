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
    return subprocess.run(
        [ALMQUIST, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


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
