"""Our metrics (almquist/metrics.py): the declarations, the Grafana dashboard rendered from them, and the live
series on Ray's Prometheus endpoint after a few real turns through the `local` profile."""

from __future__ import annotations

import json
import re

import grpc
import pytest

from almquist import metrics
from almquist.client import Client
from almquist.v1 import common_pb2, conversation_pb2
from tests.prometheus import Series, settled, total

# What the code records, and where it is checked. A metric declared for a part still to come goes in the
# declared-only sets (none today) and must not show up until that part records it: no invented values.
RECORDED_STAGES = {"router", "retrieval", "llm_first_token"}
SPOKEN_STAGES = {"vad", "stt"}  # recorded by spoken turns (graphs/speech.py): checked by tests/test_serve_speech.py
# recorded by avatar turns (graphs/avatar.py), with the avatar's frame counters: checked by tests/test_serve_avatar.py
AVATAR_STAGES = {"tts_first_chunk", "avatar_first_frame"}
DECLARED_ONLY_STAGES: set[str] = set()
RECORDED_METRICS = {
    "almquist_turn_stage_seconds",
    "almquist_turn_seconds",
    "almquist_llm_tokens",
    "almquist_llm_tokens_per_second",
    "almquist_errors",
    # by the news pipeline (ingestion/news.py), checked on the endpoint by tests/test_feeds_live.py
    "almquist_ingestion_run_seconds",
    "almquist_ingestion_freshness_seconds",
    # by avatar turns (graphs/avatar.py), checked on the endpoint by tests/test_serve_avatar.py
    "almquist_avatar_frames_sent",
    "almquist_avatar_frames_late",
}
DECLARED_ONLY_METRICS: set[str] = set()

CHITCHAT = "Hello there, how are you doing today?"
KNOWLEDGE = "Who directed Inception?"
MAX_TOKENS = 16
NO_ANSWER = "I couldn't find that in my knowledge graph"  # GraphRAG's own reply: no LLM call behind it


# ----- the declarations and the dashboard (no Ray) -----


def test_every_declared_metric_is_either_recorded_or_listed_as_declared_only():
    assert set(metrics.METRICS) == RECORDED_METRICS | DECLARED_ONLY_METRICS
    assert not RECORDED_METRICS & DECLARED_ONLY_METRICS
    assert set(metrics.STAGES) == RECORDED_STAGES | SPOKEN_STAGES | AVATAR_STAGES | DECLARED_ONLY_STAGES
    assert not (RECORDED_STAGES | SPOKEN_STAGES | AVATAR_STAGES) & DECLARED_ONLY_STAGES
    assert all(name.startswith("almquist_") for name in metrics.METRICS)


def test_dashboard_has_a_panel_for_every_declared_metric():
    panels = metrics.dashboard()["panels"]
    assert len(panels) == len(metrics.METRICS)
    for spec, panel in zip(metrics.METRICS.values(), panels, strict=True):
        assert panel["title"] == spec.title and panel["targets"]
        exprs = [target["expr"] for target in panel["targets"]]
        assert all(spec.exported in expr for expr in exprs), (spec.name, exprs)
        if spec.kind == "histogram":
            assert {"p50", "p99"} <= {target["legendFormat"].split()[0] for target in panel["targets"]}
            assert all(f"{spec.exported}_bucket" in e and "by (le" in e and "histogram_quantile" in e for e in exprs)
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert len({(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels}) == len(panels)  # no two overlap


def test_panel_queries_use_the_names_ray_exports():
    names = {
        name
        for panel in metrics.dashboard()["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b([a-z_][a-z0-9_]*)\{", target["expr"])
    }
    expected = {f"ray_{n}_total" for n, s in metrics.METRICS.items() if s.kind == "counter"}
    expected |= {f"ray_{n}_bucket" for n, s in metrics.METRICS.items() if s.kind == "histogram"}
    assert names == expected


def test_committed_dashboard_is_the_render():
    committed = metrics.DASHBOARD_FILE.read_text()
    assert committed == metrics.render_dashboard(), "regenerate it: almquist.metrics.DASHBOARD_FILE"
    assert json.loads(committed)["uid"] == metrics.DASHBOARD_UID


def test_install_dashboard_writes_into_the_sessions_grafana_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR", raising=False)
    monkeypatch.delenv("RAY_METRICS_OUTPUT_ROOT", raising=False)
    path = metrics.install_dashboard(tmp_path, wait_s=0)
    assert path == tmp_path / "metrics" / "grafana" / "dashboards" / "almquist_grafana_dashboard.json"
    assert path.read_text() == metrics.render_dashboard()
    monkeypatch.setenv("RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    assert metrics.install_dashboard(tmp_path, wait_s=0).parent == tmp_path / "elsewhere"  # Ray's own override


@pytest.mark.parametrize(
    ("spec", "tags", "message"),
    [
        (metrics.TURN_STAGE_SECONDS, {"stage": "lipsync"}, "is not one of"),
        (metrics.TURN_STAGE_SECONDS, {}, "takes the tags"),
        (metrics.ERRORS, {"code": "INVALID_ARGUMENT"}, "takes the tags"),
        (metrics.ERRORS, {"code": "INVALID", "where": "rpc"}, "is not one of"),
        (metrics.LLM_TOKENS, {"backend": "x", "model": "y"}, "takes the tags"),
    ],
)
def test_record_refuses_tags_that_do_not_match_the_declaration(spec, tags, message):
    with pytest.raises(ValueError, match=message):
        metrics.record(spec, 1.0, **tags)


# ----- live: Ray's Prometheus endpoint after real turns -----


def delta(after: Series, before: Series) -> Series:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def reason_tag(turn_end: common_pb2.TurnEnd) -> str:
    return common_pb2.TurnEndReason.Name(turn_end.reason).removeprefix("TURN_END_REASON_").lower()


@pytest.mark.serve
def test_turns_show_up_on_rays_prometheus_endpoint(serve_stack):
    port = serve_stack.metrics_port
    assert port
    with Client(serve_stack.target, timeout_s=300) as client:
        client.wait_ready()
        before = settled(port)  # earlier tests' turns, all reported: the deltas below are this test's alone

        responses = [client.ask(text, max_tokens=MAX_TOKENS) for text in (CHITCHAT, CHITCHAT, KNOWLEDGE)]
        assert [r.route for r in responses] == ["llm", "llm", "graph_rag"]
        # Statuses of three kinds: two RPCs that end with a code, one in-band error in a live stream.
        for kwargs, code in (
            ({"text": ""}, grpc.StatusCode.INVALID_ARGUMENT),
            ({"text": "hi", "session_id": "no-such-session"}, grpc.StatusCode.NOT_FOUND),
        ):
            with pytest.raises(grpc.RpcError) as failed:
                client.ask(**kwargs)
            assert failed.value.code() == code
        conversation = client.converse(conversation_pb2.SessionStart())
        conversation.next_event()
        conversation.send_text("   ")
        conversation.close_send()
        errors = [e.error for e in conversation.events() if e.WhichOneof("event") == "error"]
        assert [e.code for e in errors] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]]

    # The knowledge turn reached the LLM unless GraphRAG answered "not found" itself (a loaded KB without it).
    llm_calls = 2 + (0 if responses[2].answer.startswith(NO_ANSWER) else 1)
    llm_turns = responses if llm_calls == 3 else responses[:2]

    def ready(series: Series) -> bool:
        now = delta(series, before)
        return (
            total(now, "ray_almquist_turn_seconds_count") >= 3
            and total(now, "ray_almquist_errors_total") >= 3
            and total(now, "ray_almquist_llm_tokens_per_second_count") >= llm_calls
            and total(now, "ray_almquist_turn_stage_seconds_count") >= 4 + llm_calls
        )

    after = settled(port, ready)
    now = delta(after, before)

    # Whole turns: exactly our three, bucketed exactly as the TurnEnd.elapsed_s each client saw (one value).
    assert total(now, "ray_almquist_turn_seconds_count") == 3
    for boundary in metrics.TURN_SECONDS.boundaries:
        within = sum(r.turn_end.elapsed_s <= boundary for r in responses)
        assert total(now, "ray_almquist_turn_seconds_bucket", le=str(float(boundary))) == within, boundary
    assert total(now, "ray_almquist_turn_seconds_bucket", le="+Inf") == 3
    for r in responses:
        expected = sum(o.route == r.route and reason_tag(o.turn_end) == reason_tag(r.turn_end) for o in responses)
        count = total(now, "ray_almquist_turn_seconds_count", route=r.route, reason=reason_tag(r.turn_end))
        assert count == expected, (r.route, reason_tag(r.turn_end))
    turn_s = total(now, "ray_almquist_turn_seconds_sum")
    assert turn_s > 0

    # Stages: one router decision per turn, one retrieval for the knowledge turn, one first token per LLM call.
    stage = "ray_almquist_turn_stage_seconds"
    assert total(now, f"{stage}_count", stage="router") == 3
    assert total(now, f"{stage}_count", stage="retrieval") == 1
    assert total(now, f"{stage}_count", stage="llm_first_token") == llm_calls
    for name in RECORDED_STAGES:
        # Each stage is part of its turn; Ray's sums come from bucket midpoints, monotone in the value, and the
        # histograms share buckets, so the part's sum stays at most the whole's.
        assert 0 < total(now, f"{stage}_sum", stage=name) <= turn_s, name
    for name in DECLARED_ONLY_STAGES:  # nothing records them yet: no series at all, in the whole session
        assert total(after, f"{stage}_count", stage=name) == 0, name

    # Tokens: at least every streamed answer token of the LLM's turns, at most max_tokens per call.
    tokens = total(now, "ray_almquist_llm_tokens_total")
    assert sum(r.turn_end.tokens for r in llm_turns) <= tokens <= MAX_TOKENS * llm_calls
    assert total(now, "ray_almquist_llm_tokens_per_second_count") == llm_calls
    assert total(now, "ray_almquist_llm_tokens_per_second_sum") > 0
    # No request ran faster than 1000 tokens/s (a CPU model: tens), and none in the first bucket's 0.5 or less.
    assert total(now, "ray_almquist_llm_tokens_per_second_bucket", le="1000.0") == llm_calls
    assert total(now, "ray_almquist_llm_tokens_per_second_bucket", le="0.5") == 0
    assert {tag for (sample, tags), _ in now.items() if sample.startswith("ray_almquist_llm") for tag in tags} >= {
        ("backend", "TransformersEngine")
    }

    # Errors, by status code and where they were answered.
    errors = "ray_almquist_errors_total"
    assert total(now, errors, code="INVALID_ARGUMENT", where="rpc") == 1
    assert total(now, errors, code="NOT_FOUND", where="rpc") == 1
    assert total(now, errors, code="INVALID_ARGUMENT", where="event") == 1
    assert total(now, errors) == 3

    # Declared-only metrics: not on the endpoint until their parts exist.
    exported = {sample for sample, _ in after}
    for name in DECLARED_ONLY_METRICS:
        assert not any(sample.startswith(metrics.METRICS[name].exported) for sample in exported), name


@pytest.mark.serve
def test_install_dashboard_finds_the_running_session(serve_stack, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR", raising=False)
    monkeypatch.delenv("RAY_METRICS_OUTPUT_ROOT", raising=False)
    path = metrics.install_dashboard(wait_s=0)  # this session's Ray runs without its dashboard: nothing to wait for
    session = ray._private.worker._global_node.get_session_dir_path()
    assert path == metrics.grafana_dashboards_dir(session) / metrics.DASHBOARD_FILE_NAME
    assert path.is_relative_to(session) and path.read_text() == metrics.render_dashboard()
