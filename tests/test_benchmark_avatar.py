"""benchmarks/avatar.py cannot rot: its measuring code runs two concurrent avatar streams against the grpcio
baseline server (no Ray) and through the Serve stack's gRPC proxy, and the figures it returns must add up; its
underrun rule is checked on streams with known arrivals."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from benchmarks.avatar import (
    STORY,
    RunResult,
    StreamRecord,
    answer_tokens,
    baseline_server,
    local_avatar_config,
    max_clean,
    measure,
    scripted_engine,
    story,
)


def on_grid(seconds: float, fps: int = 60, start_s: float = 0.5) -> list[float]:
    return [start_s + k / fps for k in range(round(seconds * fps))]


def test_frames_that_arrive_ahead_of_playout_never_underrun():
    record = StreamRecord(fps=60, finished=True)
    record.frame_times = on_grid(2.0)
    record.frame_arrivals = [t - 0.3 for t in record.frame_times]  # sent lead_s = 0.3 s ahead
    record.audio_spans = [(0.5, 2.5)]
    assert record.underruns() == 0


def test_a_stall_counts_every_pull_that_finds_the_face_more_than_a_frame_behind():
    record = StreamRecord(fps=60, finished=True)
    record.frame_times = on_grid(2.0)
    # on time until the frame at 1.5 s; from there everything arrives at once at 2.0 s (a 0.5 s stall)
    record.frame_arrivals = [t - 0.1 if t < 1.5 - 1e-9 else 2.0 for t in record.frame_times]
    record.audio_spans = [(0.5, 2.5)]
    # the newest frame held is 1.5 - 1/60: the pulls after 1.5 + 1/60 (one period of slack) and before 2.0 starve
    assert record.underruns() == 29


def test_an_open_turn_cut_off_by_the_deadline_counts_up_to_the_audio_received():
    record = StreamRecord(fps=60)
    record.frame_times = on_grid(1.0)
    record.frame_arrivals = [t - 0.2 for t in record.frame_times]
    record.turn_audio = [(0.5, 1.0), (1.0, 2.0)]  # audio up to 2.0 s, frames only up to 1.5 s
    assert record.underruns() == 29  # pulls after 1.5 + 1/60 up to the audio's end at 2.0


def test_the_story_is_cut_to_the_seconds_asked_for():
    text, spoken = story(5.0, [2.0] * len(STORY))
    assert text == " ".join(STORY[:3]) and spoken == 6.0
    assert "".join(answer_tokens(text)) == text  # the tokens say exactly the text
    with pytest.raises(ValueError, match="positive"):
        story(0, [2.0] * len(STORY))


def test_the_scripted_engine_streams_its_answer_word_by_word_and_stops_at_max_tokens():
    from deployments.llm.engine import ChatMessage, GenerationRequest

    engine = scripted_engine("One two three.")(None)

    async def tokens(max_tokens: int) -> list:
        await engine.start()
        request = GenerationRequest(messages=(ChatMessage("user", "hi"),), max_tokens=max_tokens)
        return [chunk async for chunk in engine.stream(request)]

    full = asyncio.run(tokens(10))
    assert [c.text for c in full] == ["One ", "two ", "three."] and full[-1].finish_reason == "stop"
    cut = asyncio.run(tokens(2))
    assert [c.text for c in cut] == ["One ", "two "] and cut[-1].finish_reason == "length"


def test_max_clean_stops_at_the_first_count_with_underruns_or_failed_streams():
    def result(streams: int, underruns: int, failed: int = 0) -> RunResult:
        figures: dict[str, Any] = dict.fromkeys(
            ("lateness_p50_ms", "lateness_p99_ms", "frames_per_s", "audio_s"), math.nan
        )
        figures |= dict.fromkeys(("client_cpu_pct", "server_cpu_pct", "other_cpu_pct", "wall_s"), math.nan)
        return RunResult(streams, failed, frames=1, late_frames=0, underruns=underruns, late_audio=0, **figures)

    assert max_clean({1: result(1, 0), 10: result(10, 0), 50: result(50, 3), 100: result(100, 0)}) == "10"
    assert max_clean({1: result(1, 0), 10: result(10, 0, failed=1)}) == "1"
    assert max_clean({1: result(1, 2)}) == "none"


def check_sane(result: RunResult, fps: int) -> None:
    assert result.streams == 2 and result.failed == 0 and result.errors == ()
    assert result.audio_s > 0.5
    # every frame of the speech reached the clients: fps frames per second of audio, per stream (a frame of slack
    # each for where the grid meets the audio's ends)
    assert abs(result.frames - 2 * result.audio_s * fps) <= 2 * 2
    assert 0 <= result.late_frames <= result.frames and result.underruns >= 0 and result.late_audio >= 0
    assert math.isfinite(result.lateness_p50_ms) and result.lateness_p50_ms <= result.lateness_p99_ms
    assert result.lateness_p50_ms < 0  # the server sends lead_s ahead: the typical frame is early
    assert 0.8 * fps < result.frames_per_s < 1.5 * fps
    assert result.client_cpu_pct > 0 and result.server_cpu_pct > 0 and result.wall_s >= result.audio_s


def test_two_streams_against_the_grpcio_baseline():
    config = local_avatar_config()
    answer = STORY[0]
    with baseline_server(config, answer) as target:
        result = asyncio.run(measure(target, 2, ramp_s=0.2, max_tokens=len(answer_tokens(answer)), timeout_s=60))
    check_sane(result, config.fps)
    assert result.routes == ("script",)


@pytest.mark.serve
def test_two_streams_through_the_serve_proxy(serve_stack):
    # the local profile's SmolLM2 writes the answer here (the benchmark swaps in its scripted engine)
    result = asyncio.run(measure(serve_stack.target, 2, application="conversation", max_tokens=24, timeout_s=240))
    check_sane(result, local_avatar_config().fps)
    assert result.routes == ("llm",)


def test_avatar_settings_start_from_the_local_profile_and_take_overrides():
    assert local_avatar_config().lead_s == 0.3  # serve_config/local.yaml
    config = local_avatar_config(["face_message_ms=100", "lead_s=0.2"])
    assert (config.face_message_ms, config.lead_s) == (100, 0.2)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        local_avatar_config(["frame_rate=30"])
    with pytest.raises(ValueError, match="fps"):
        local_avatar_config(["fps=45"])
