"""The GPU placement plan of the `cluster` profile: it holds, and every way of breaking it fails with a message that
names the deployment and the number. (tests/test_placement_cluster.py deploys it on a simulated 4-node cluster.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from almquist import runtime
from almquist.ops import placement

PROFILE = runtime.PROFILE_DIR / "cluster.yaml"
PLAN = placement.plan_path("cluster")
# Every model family the issue names, as the deployment that serves it.
FAMILIES = {
    "LLMServer", "Embeddings", "STT", "Diarization", "VoiceEmotion", "TTS",
    "Separation", "MusicGen", "ImageGen", "Detection", "Depth", "Segmentation",
}  # fmt: skip


def edited(tmp_path: Path, source: Path, edit) -> Path:
    raw = yaml.safe_load(source.read_text())
    edit(raw)
    path = tmp_path / source.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def deployment(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for app in raw["applications"] for d in app["deployments"] if d["name"] == name)


@pytest.fixture(scope="module")
def report() -> placement.PlanReport:
    return placement.check_profile("cluster")


def test_the_cluster_plan_holds(report):
    assert report.ok, report.errors
    plan = report.plan
    budget = plan.gpu.budget_gib
    assert {d.name for d in report.demands} >= FAMILIES
    for demand in report.demands:
        if demand.gpus_per_replica > 0:
            assert demand.estimate is not None and len(demand.estimate.source) > 40, demand.name
    for scenario, placed in report.placements.items():
        assert not placed.unplaced, scenario
        assert len(placed.cards) == 8
        for card in placed.cards:
            assert card.memory_gib <= budget and card.used <= 1 + 1e-9, (scenario, card)
        for demand in report.demands:
            assert len(placed.replicas[demand.name]) == demand.replicas[scenario]
    # vLLM with tensor parallelism 2: each replica owns both cards of one `llm` node
    start = report.placements["start"]
    assert sorted(start.replicas["LLMServer"]) == ["ws0", "ws1"]
    llm_cards = [card for card in start.cards if card.node in ("ws0", "ws1")]
    assert all(card.used == 1 and len(card.residents) == 1 for card in llm_cards)
    # pinned families land on their node type only
    types = {node.name: node.type for node in plan.nodes}
    for name, node_type in (("STT", "speech"), ("ImageGen", "media"), ("Embeddings", "speech")):
        assert {types[n] for n in report.placements["max"].replicas[name]} == {node_type}


def test_estimates_inside_their_fractions_make_any_packing_safe(report):
    """Ray packs replicas in an order that depends on timing: in 200 random orders no card goes over budget."""
    budget = report.plan.gpu.budget_gib
    worst = 0.0
    for seed in range(200):
        placed = placement.place(report.plan, report.demands, "max", shuffle_seed=seed)
        worst = max(worst, *(card.memory_gib for card in placed.cards))
    assert 0 < worst <= budget


def test_a_card_over_committed_by_memory_is_named(tmp_path):
    def edit(raw):
        raw["estimates"]["ImageGen"]["runtime_gib"] = 14.0  # 20.5 GiB inside num_gpus 0.27 (12.69 GiB)

    report = placement.check_profile(PROFILE, edited(tmp_path, PLAN, edit))
    assert not report.ok
    [message] = [e for e in report.errors if e.startswith("ImageGen:")]
    assert "20.50 GiB" in message and "num_gpus 0.27" in message and "12.69 GiB" in message and "0.436" in message
    # two such replicas on one card: the per-card check shows the card and its total
    assert any(re.match(r"ws2 GPU \d \(max\): .* > 47\.00 GiB budget", e) for e in report.errors), report.errors


def test_a_gpu_deployment_without_an_estimate_is_named(tmp_path):
    report = placement.check_profile(PROFILE, edited(tmp_path, PLAN, lambda raw: raw["estimates"].pop("Embeddings")))
    assert report.errors == [
        "Embeddings: asks for 0.03 GPU per replica but has no memory estimate in the plan"
        " (estimates.Embeddings: weights_gib, runtime_gib, source)"
    ]


def test_more_replicas_than_the_nodes_hold_are_named(tmp_path):
    def edit(raw):
        deployment(raw, "STT")["autoscaling_config"]["max_replicas"] = 30

    report = placement.check_profile(edited(tmp_path, PROFILE, edit), PLAN)
    unplaced = [e for e in report.errors if e.startswith("STT: replica")]
    assert unplaced and all("of 30 (max) does not fit" in e and "GPU: 0.1" in e for e in unplaced)
    assert not any("(start)" in e for e in report.errors)


def test_the_engine_claim_and_the_estimate_must_agree(tmp_path):
    def edit(raw):
        raw["applications"][0]["args"]["llm"]["vllm"]["gpu_memory_utilization"] = 0.95

    report = placement.check_profile(edited(tmp_path, PROFILE, edit), PLAN)
    assert report.errors == [
        "LLMServer: the engine claims 0.95 x 48 = 45.60 GiB per card, but the estimate says 43.20 GiB"
    ]


def test_a_replica_bigger_than_its_first_bundle_is_named(tmp_path):
    def edit(raw):
        deployment(raw, "LLMServer")["ray_actor_options"]["num_cpus"] = 6

    report = placement.check_profile(edited(tmp_path, PROFILE, edit), PLAN)
    assert any(e.startswith("LLMServer: ray_actor_options asks CPU=6") and "(4)" in e for e in report.errors)


def test_plan_and_profile_must_agree_on_names(tmp_path):
    def edit(raw):
        raw.setdefault("planned", {})["Embeddings"] = {"num_gpus": 0.03, "node_type": "speech"}
        raw["estimates"]["Lipsync"] = {"weights_gib": 1, "runtime_gib": 1, "source": "a model nobody deploys"}

    report = placement.check_profile(PROFILE, edited(tmp_path, PLAN, edit))
    assert "Embeddings: is in the profile now; delete its `planned:` entry (the profile's options win)" in report.errors
    assert "Lipsync: has a memory estimate but is neither in the profile nor planned" in report.errors


def test_a_profile_that_does_not_parse_names_the_deployment(tmp_path):
    def edit(raw):
        deployment(raw, "LLMServer")["autoscaling_config"]["max_replicas"] = "lots"

    with pytest.raises(placement.PlanError, match=r"deployment LLMServer: autoscaling_config\.max_replicas.*'lots'"):
        placement.check_profile(edited(tmp_path, PROFILE, edit), PLAN)
    broken = tmp_path / "broken.yaml"
    broken.write_text("applications: [\n")
    with pytest.raises(placement.PlanError, match=r"broken\.yaml is not valid YAML"):
        placement.check_profile(broken, PLAN)


def test_a_plan_that_does_not_parse_says_where(tmp_path):
    def edit(raw):
        raw["nodes"][3]["type"] = "gpu-box"

    with pytest.raises(placement.PlanError, match="node ws3: unknown type 'gpu-box'"):
        placement.load_plan(edited(tmp_path, PLAN, edit))
    with pytest.raises(placement.PlanError, match=r"estimates\.STT\.weights_gib.*greater than or equal to 0"):
        placement.load_plan(edited(tmp_path, PLAN, lambda raw: raw["estimates"]["STT"].update(weights_gib=-1)))


def run_cli(*args: str, columns: int = 40) -> subprocess.CompletedProcess:
    # A narrow terminal by default: messages scripts read must not depend on where a wrap would fall (the tables,
    # for people, do fit themselves to the terminal: the test that reads them gives them room).
    return subprocess.run(
        [sys.executable, "-m", "almquist.cli", "plan", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": str(columns)},
    )


def test_cli_prints_the_cards_and_fails_on_a_broken_plan(tmp_path):
    ok = run_cli("check", columns=200)
    assert ok.returncode == 0, ok.stderr
    assert "GPU plan, max replicas" in ok.stdout and "LLMServer#2" in ok.stdout and "plan ok" in ok.stderr
    bad = edited(tmp_path, PLAN, lambda raw: raw["estimates"]["ImageGen"].update(runtime_gib=14.0))
    failed = run_cli("check", "--plan", str(bad))
    assert failed.returncode == 1 and "ImageGen: needs 20.50 GiB per card" in " ".join(failed.stderr.split())


def test_ray_cluster_yaml_declares_the_plans_nodes():
    plan = placement.load_plan(PLAN)
    config = yaml.safe_load((runtime.REPO_ROOT / "ray_cluster.yaml").read_text())
    addresses = [config["provider"]["head_ip"], *config["provider"]["worker_ips"]]
    assert addresses == [node.address for node in plan.nodes]
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count('--resources="$(/opt/almquist/.venv/bin/almquist plan resources)"') == 2
    assert starts.count(f"--num-gpus={plan.node_types['llm'].gpus}") == 2
    assert "--dashboard-port=8265" in starts and starts.count("--metrics-export-port=8080") == 2
    for node in plan.nodes:  # what each machine's start command will declare
        result = run_cli("resources", "--address", node.address)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {f"node_{node.name}": 1, f"node_type_{node.type}": 1000}
    lost = run_cli("resources", "--address", "192.0.2.1")
    assert lost.returncode == 2 and "none of the plan's nodes" in lost.stderr


def test_the_ingestion_embedder_must_match_the_profile(tmp_path):
    def edit(raw):
        raw["applications"][0]["args"]["knowledge"]["embed_num_gpus"] = 0.05

    report = placement.check_profile(edited(tmp_path, PROFILE, edit), PLAN)
    assert report.errors == [
        "IngestionEmbedder: num_gpus is 0.03 in the plan but 0.05 in the profile's knowledge.embed_num_gpus"
    ]
    report = placement.check_profile(PROFILE, edited(tmp_path, PLAN, lambda raw: raw.pop("actors")))
    assert any("no `actors: IngestionEmbedder` entry" in e for e in report.errors), report.errors
