"""The `cluster` profile deployed on a simulated 4-node Ray cluster (2 logical GPUs and the plan's custom resources
per node), every engine swapped for a tiny one: every replica placed, none pending, and the GPU assignment Ray made
keeps every card inside the plan's memory budget, node by node as the plan's checker computed it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from almquist import runtime
from almquist.ops import placement


def cpus_per_node(report: placement.PlanReport) -> int:
    """Logical CPUs per simulated node (the plan's nodes have 64, but 4 x 64 idle slots would only cost memory here):
    the most CPU the node-pinned replicas take on one node plus every unpinned replica, so that no order in which Ray
    schedules can leave a pinned replica without CPU on its node. Ray spreads unpinned replicas by timing; with a
    tighter figure (12 once) the unpinned ones sometimes filled the media node before MusicGen came."""
    pinned: dict[str, float] = defaultdict(float)
    unpinned = 0.0
    for demand in report.demands:
        cpus = sum(bundle.get("CPU", 0.0) for bundle in demand.bundles)
        if any(key.startswith("node_type_") for bundle in demand.bundles for key in bundle):
            for node in report.placements["start"].replicas[demand.name]:
                pinned[node] += cpus
        else:
            unpinned += cpus * demand.replicas["start"]
    needed = math.ceil(max(pinned.values()) + unpinned)
    # the real nodes must have that headroom too, or Ray's order could starve a pinned replica there as well
    assert needed <= min(node_type.cpus for node_type in report.plan.node_types.values()), needed
    return needed


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, report: placement.PlanReport) -> dict:
    args: dict[str, Any] = {"work": str(tmp_path_factory.mktemp("sim-cluster")), "llm_dir": str(tiny_llama_dir)}
    args["cpus_per_node"] = cpus_per_node(report)
    result = subprocess.run(
        [sys.executable, "-m", "tests.simulated_cluster", json.dumps(args)],
        cwd=runtime.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("SIMULATED_CLUSTER_REPORT ")]
    assert result.returncode == 0 and lines, result.stderr[-4000:]
    return json.loads(lines[-1].split(" ", 1)[1])


@pytest.fixture(scope="module")
def report() -> placement.PlanReport:
    report = placement.check_profile("cluster")
    assert report.ok, report.errors
    return report


def test_every_replica_is_placed_and_none_is_pending(deployed, report):
    expected = {demand.name: demand.replicas["start"] for demand in report.demands}
    running = defaultdict(int)
    for replica in deployed["replicas"]:
        running[replica["deployment"]] += 1
    assert dict(running) == expected
    for name, count in expected.items():
        status = deployed["statuses"][name]
        assert status["status"].endswith("HEALTHY"), (name, status)
        assert status["replica_states"] == {"RUNNING": count}, (name, status)
    assert deployed["pending_actors"] == [] and deployed["pending_placement_groups"] == []


def test_the_gpu_assignment_keeps_every_card_inside_the_plan(deployed, report):
    plan = report.plan
    estimates = {demand.name: demand.estimate for demand in report.demands}
    types = {node.name: node.type for node in plan.nodes}
    memory: dict[tuple[str, str], float] = defaultdict(float)
    fractions: dict[tuple[str, str], float] = defaultdict(float)
    demands = {demand.name: demand for demand in report.demands}
    for replica in deployed["replicas"]:
        name, node = replica["deployment"], replica["node"]
        demand = demands[name]
        pinned = [key.removeprefix("node_type_") for b in demand.bundles for key in b if key.startswith("node_type_")]
        assert all(types[node] == t for t in pinned), (name, node)
        if replica["bundles"]:
            # the LLM: a STRICT_PACK group of whole cards on one node; the replica itself holds no GPU
            assert {b["node"] for b in replica["bundles"]} == {node} and replica["gpu_ids"] == []
            assert sum(b["resources"].get("GPU", 0) for b in replica["bundles"]) == plan.node_types[types[node]].gpus
            for gpu in range(plan.node_types[types[node]].gpus):
                memory[(node, str(gpu))] += estimates[name].total_gib
                fractions[(node, str(gpu))] += 1.0
        elif demand.gpus_per_replica > 0:
            assert len(replica["gpu_ids"]) == 1, replica  # a fraction lives on exactly one card
            memory[(node, replica["gpu_ids"][0])] += estimates[name].total_gib
            fractions[(node, replica["gpu_ids"][0])] += demand.gpus_per_replica
        else:
            assert replica["gpu_ids"] == [], replica
    assert memory, "no GPU replica reported"
    budget = plan.gpu.budget_gib
    assert all(used <= budget for used in memory.values()), dict(memory)
    assert all(share <= 1 + 1e-9 for share in fractions.values()), dict(fractions)
    # node by node, Ray put exactly the memory the checker's placement put there (pins make nodes deterministic;
    # which card of a node a fraction takes is Ray's choice, and the per-replica rule makes any choice safe)
    per_node: dict[str, float] = defaultdict(float)
    for (node, _), used in memory.items():
        per_node[node] += used
    planned = {node: round(total, 6) for node, total in report.placements["start"].node_memory().items() if total}
    assert {node: round(total, 6) for node, total in per_node.items()} == planned
