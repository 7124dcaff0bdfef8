"""Almquist's own metrics: every series declared once, as data, and recorded through `ray.util.metrics`.

Ray exports them on its Prometheus endpoint (each node's metrics agent, `ray.init(_metrics_export_port=...)` or
`ray start --metrics-export-port`) with a `ray_` prefix: a counter `almquist_x` becomes `ray_almquist_x_total`, a
histogram `almquist_y` becomes `ray_almquist_y_bucket`, `_sum` and `_count`. Ray adds its own labels (SessionName,
WorkerId, ...); queries sum over them.

In: `record(SPEC, value, **tags)` (or `observe_stage` / `time_stage` for a turn's stages) from any process. A
`ray.util.metrics` object is created on first use in the process that records, never at import: a deployment's
metrics then belong to its replica, and the driver that only builds the graph registers nothing.
Out: `render_dashboard()`, a Grafana dashboard (JSON text) with one panel per declared metric, and
`install_dashboard()`, which writes it into the running Ray session's Grafana provisioning folder beside Ray's own
dashboards. `DASHBOARD_FILE` is the same JSON, committed for importing into any Grafana by hand.

What is recorded today, and where:
  almquist_turn_stage_seconds   stage=router (graphs/router.py), retrieval (graphs/graph_rag.py),
                                llm_first_token (deployments/llm/server.py)
  almquist_turn_seconds         graphs/conversation.py (every turn that ends with a TurnEnd)
  almquist_llm_tokens           deployments/llm/server.py
  almquist_llm_tokens_per_second  deployments/llm/server.py
  almquist_errors               graphs/conversation.py (statuses, in-band ErrorEvents, failed turns)
  stage=vad (VAD's end-of-turn decision after the deciding chunk arrived) and stt (the final transcript, with
  speaker and emotion) in graphs/speech.py, for spoken turns.
Declared for the parts still to come, recorded by nothing yet: the stages tts_first_chunk and
avatar_first_frame; almquist_avatar_frames_sent / _late; almquist_ingestion_run_seconds and
almquist_ingestion_freshness_seconds.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc

Kind = Literal["counter", "histogram"]

# One set of latency buckets for every "seconds" histogram: the stage and turn histograms can then be compared
# bucket by bucket (Ray reports a histogram's _sum from bucket midpoints, so equal buckets keep sums comparable).
LATENCY_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120)
RATE_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# Ingestion runs take seconds (a slice) to many minutes (all of MetaQA's entity embeddings); freshness up to a day.
INGESTION_BUCKETS_S: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)

STAGES: tuple[str, ...] = (
    "vad",  # end of the user's speech -> the VAD's end-of-turn decision
    "stt",  # end of turn -> the final transcript
    "router",  # Router.decide: intent and route for the turn's text
    "retrieval",  # GraphRAG: the answer set from the knowledge graph (entity linking, relation path, Cypher)
    "llm_first_token",  # an LLM request reaching LLMServer -> its first token
    "tts_first_chunk",  # text handed to TTS -> its first audio chunk
    "avatar_first_frame",  # the first audio chunk -> the first face frame sent on the stream
)
ERROR_WHERE: tuple[str, ...] = (
    "rpc",  # the RPC ended with this status
    "event",  # an in-band ErrorEvent inside a live Converse stream (the stream goes on)
    "turn",  # a turn ended with TURN_END_REASON_ERROR
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what Ray registers (name, description, tag keys, buckets) and how the dashboard shows it."""

    name: str  # as registered with ray.util.metrics; Prometheus sees `exported`
    kind: Kind
    description: str
    title: str  # the dashboard panel's title
    unit: str = "short"  # Grafana unit of the panel's y axis
    tag_keys: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()  # histograms only
    window: str = "5m"  # the dashboard's rate window: wide enough to hold a few events of this metric
    # Tags whose values are a closed set: a value outside it is a bug in the caller, refused by `record`.
    closed: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)

    @property
    def exported(self) -> str:
        """The Prometheus name Ray exports (histograms add _bucket/_sum/_count to it)."""
        return f"ray_{self.name}_total" if self.kind == "counter" else f"ray_{self.name}"


TURN_STAGE_SECONDS = MetricSpec(
    "almquist_turn_stage_seconds",
    "histogram",
    "Seconds one stage of a turn took; the stage tag names it (vad, stt, router, retrieval, llm_first_token, "
    "tts_first_chunk, avatar_first_frame).",
    "Turn stage latency (p50, p99)",
    unit="s",
    tag_keys=("stage",),
    boundaries=LATENCY_BUCKETS_S,
    closed={"stage": STAGES},
)
TURN_SECONDS = MetricSpec(
    "almquist_turn_seconds",
    "histogram",
    "Seconds from a turn's start at the ingress to its TurnEnd (the TurnEnd's elapsed_s), by route and end reason.",
    "Turn latency (p50, p99)",
    unit="s",
    tag_keys=("route", "reason"),
    boundaries=LATENCY_BUCKETS_S,
)
LLM_TOKENS = MetricSpec(
    "almquist_llm_tokens",
    "counter",
    "Tokens the LLM generated, by engine class.",
    "LLM tokens generated per second (all requests)",
    tag_keys=("backend",),
)
LLM_TOKENS_PER_SECOND = MetricSpec(
    "almquist_llm_tokens_per_second",
    "histogram",
    "Per LLM request: tokens generated / seconds from the request to its last token (prefill included).",
    "LLM tokens/s per request (p50, p99)",
    tag_keys=("backend",),
    boundaries=RATE_BUCKETS,
)
ERRORS = MetricSpec(
    "almquist_errors",
    "counter",
    "Errors answered with a gRPC status code, by code and where: rpc (the RPC ended with it), event (an in-band "
    "ErrorEvent in a Converse stream), turn (a turn ended with an error).",
    "Errors per second by status code",
    tag_keys=("code", "where"),
    closed={"code": tuple(code.name for code in grpc.StatusCode), "where": ERROR_WHERE},
)
AVATAR_FRAMES_SENT = MetricSpec(
    "almquist_avatar_frames_sent",
    "counter",
    "Avatar face frames sent on a stream.",
    "Avatar frames sent per second",
)
AVATAR_FRAMES_LATE = MetricSpec(
    "almquist_avatar_frames_late",
    "counter",
    "Avatar face frames sent after their time code on the audio clock had passed.",
    "Avatar frames late per second",
)
INGESTION_RUN_SECONDS = MetricSpec(
    "almquist_ingestion_run_seconds",
    "histogram",
    "Seconds from an ingestion run's start to its snapshot's commit, by source.",
    "Ingestion run, start to commit (p50, p99)",
    unit="s",
    tag_keys=("source",),
    boundaries=INGESTION_BUCKETS_S,
    window="1d",  # a few runs a day: a 5-minute window would be empty between them
)
INGESTION_FRESHNESS_SECONDS = MetricSpec(
    "almquist_ingestion_freshness_seconds",
    "histogram",
    "Per ingested item: seconds from its appearance in its feed (its publication time when that falls since the"
    " previous poll, else the poll that found it) to the commit that makes it answerable.",
    "Ingestion freshness (p50, p99)",
    unit="s",
    tag_keys=("source",),
    boundaries=INGESTION_BUCKETS_S,
)

METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        TURN_STAGE_SECONDS,
        TURN_SECONDS,
        LLM_TOKENS,
        LLM_TOKENS_PER_SECOND,
        ERRORS,
        AVATAR_FRAMES_SENT,
        AVATAR_FRAMES_LATE,
        INGESTION_RUN_SECONDS,
        INGESTION_FRESHNESS_SECONDS,
    )
}

# ----- recording -----

_instruments: dict[str, Any] = {}  # this process's ray.util.metrics objects, by metric name
_instruments_lock = threading.Lock()  # replicas record from their event loop and from worker threads


def _instrument(spec: MetricSpec) -> Any:
    """This process's `ray.util.metrics` object for `spec`, created on first use."""
    instrument = _instruments.get(spec.name)
    if instrument is None:
        from ray.util import metrics  # here, not at import: `render_dashboard` needs no Ray

        with _instruments_lock:
            instrument = _instruments.get(spec.name)
            if instrument is None:
                if spec.kind == "counter":
                    instrument = metrics.Counter(spec.name, spec.description, tag_keys=spec.tag_keys)
                else:
                    instrument = metrics.Histogram(
                        spec.name, spec.description, boundaries=list(spec.boundaries), tag_keys=spec.tag_keys
                    )
                _instruments[spec.name] = instrument
    return instrument


def check_tags(spec: MetricSpec, tags: dict[str, str]) -> None:
    """Raises ValueError unless `tags` gives exactly the spec's tag keys, each closed one a known value."""
    if set(tags) != set(spec.tag_keys):
        raise ValueError(f"{spec.name} takes the tags {list(spec.tag_keys)}, got {sorted(tags)}")
    for key, allowed in spec.closed.items():
        if tags[key] not in allowed:
            raise ValueError(f"{spec.name}: {key}={tags[key]!r} is not one of {list(allowed)}")


def record(spec: MetricSpec, value: float, **tags: str) -> None:
    """Adds `value` to a counter or observes it in a histogram, with exactly the spec's tags (checked)."""
    check_tags(spec, tags)
    if spec.kind == "counter":
        _instrument(spec).inc(value, tags=tags)
    else:
        _instrument(spec).observe(value, tags=tags)


def observe_stage(stage: str, seconds: float) -> None:
    """Records that one stage of a turn (one of `STAGES`) took `seconds`."""
    record(TURN_STAGE_SECONDS, seconds, stage=stage)


@contextmanager
def time_stage(stage: str) -> Iterator[None]:
    """Times the block as one stage of a turn; recorded when the block exits, by an exception too (the turn
    waited that long either way)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(stage, time.perf_counter() - started)


# ----- the Grafana dashboard -----

DASHBOARD_UID = "almquistDashboard"
DASHBOARD_FILE = Path(__file__).parent / "dashboards" / "almquist_grafana_dashboard.json"
DASHBOARD_FILE_NAME = "almquist_grafana_dashboard.json"
_FILTER = 'ray_io_cluster=~"$Cluster"'  # as Ray's own dashboards: one cluster of several in a shared Prometheus
_QUANTILES = (0.5, 0.99)


def panel_queries(spec: MetricSpec) -> list[tuple[str, str]]:
    """(PromQL expression, legend) pairs for a metric's panel: quantiles for a histogram, a rate for a counter."""
    by = ", ".join(spec.tag_keys)
    legend = " ".join(f"{{{{{key}}}}}" for key in spec.tag_keys)
    if spec.kind == "histogram":
        group = f"le, {by}" if by else "le"
        rate = f"sum(rate({spec.exported}_bucket{{{_FILTER}}}[{spec.window}])) by ({group})"
        return [(f"histogram_quantile({q}, {rate})", f"p{round(q * 100)} {legend}".strip()) for q in _QUANTILES]
    rate = f"sum(rate({spec.exported}{{{_FILTER}}}[{spec.window}]))"
    return [(f"{rate} by ({by})" if by else rate, legend or spec.title)]


def _panel(spec: MetricSpec, index: int) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": spec.title,
        "description": f"{spec.description} ({spec.exported})",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": spec.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(ord("A") + n),
            }
            for n, (expr, legend) in enumerate(panel_queries(spec))
        ],
    }


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard model: one panel per declared metric, in declaration order."""
    return {
        "uid": DASHBOARD_UID,
        "title": "Almquist",
        "description": "Almquist's own metrics (almquist/metrics.py), next to Ray's dashboards.",
        "tags": ["almquist", "ray"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "hide": 2},
                {
                    "name": "Cluster",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(ray_node_network_receive_speed, ray_io_cluster)",
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "refresh": 1,
                },
            ]
        },
        "panels": [_panel(spec, index) for index, spec in enumerate(METRICS.values())],
    }


def render_dashboard() -> str:
    """The dashboard as JSON text (stable: the committed DASHBOARD_FILE must equal it)."""
    return json.dumps(dashboard(), indent=2) + "\n"


def grafana_dashboards_dir(session_dir: str | Path | None = None) -> Path:
    """Where Ray's Grafana provisioning reads dashboards from for a session (Ray writes its defaults there).

    Honours Ray's own overrides (RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR, RAY_METRICS_OUTPUT_ROOT) the way
    Ray's dashboard does. Without `session_dir`, the session of the Ray this process is connected to.
    """
    if override := os.environ.get("RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR"):
        return Path(override)
    if root := os.environ.get("RAY_METRICS_OUTPUT_ROOT"):
        return Path(root) / "grafana" / "dashboards"
    if session_dir is None:
        import ray

        if not ray.is_initialized():
            raise RuntimeError("connect to Ray first (ray.init(address='auto')) or pass the session folder")
        # Ray has no public getter for the session folder; the driver's node object knows it.
        node = ray._private.worker._global_node
        assert node is not None  # set by ray.init
        session_dir = node.get_session_dir_path()
    return Path(session_dir) / "metrics" / "grafana" / "dashboards"


def install_dashboard(session_dir: str | Path | None = None, wait_s: float = 10.0) -> Path:
    """Writes the dashboard beside Ray's own in the session's Grafana provisioning folder; returns the file.

    Ray's dashboard process clears that folder when it starts and then writes its defaults, so this waits up to
    `wait_s` for Ray's default dashboard to be there first; a Ray started without its dashboard never writes
    them, and the folder is created after the wait.
    """
    folder = grafana_dashboards_dir(session_dir)
    deadline = time.monotonic() + wait_s
    while not (folder / "default_grafana_dashboard.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DASHBOARD_FILE_NAME
    path.write_text(render_dashboard())
    return path
