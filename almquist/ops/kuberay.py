"""The KubeRay manifests in `kuberay/`, rendered from the `cluster` Serve profile and its placement plan.

In: a Serve profile (serve_config/<profile>.yaml, Ray's `ServeDeploySchema`) and its plan (serve_config/plans/
<profile>.yaml: GPU model, node types with their GPUs/CPUs/memory, the nodes of each type). Out: three files of
Kubernetes documents, never edited by hand:

- `rayservice.yaml`: the `RayService` that runs the profile. Its `serveConfigV2` is the profile re-dumped from the
  parsed schema (so it is exactly what `serve deploy` would get); a head with 0 GPUs; one worker group per node type
  of the plan, as many pods as the plan has nodes of that type, each declaring the type's GPUs and the
  `node_type_<type>` resource the profile's deployments pin themselves to. Beside it a `Service` for gRPC, which
  KubeRay's own serve Service does not carry (it exposes only the port named `serve`).
- `raycluster-notebooks.yaml`: an autoscaling CPU `RayCluster` researchers reach with Ray Client or Ray jobs.
- `rayjob-ingestion.yaml`: a `RayJob` that runs `python -m ingestion metaqa` into the profile's knowledge stores on a
  cluster of its own, deleted after the job.
- `security.yaml`: TLS and the locked cluster. A cert-manager `Certificate` (its issuer referenced by name, made by the
  operator) whose Secret the two `Ingress`es (ingress-nginx: gRPC with `backend-protocol: GRPC`, HTTP) terminate TLS
  with, since Serve's gRPC proxy cannot (almquist/ops/tls_front.py says why); `NetworkPolicy`s that let into the Ray
  pods only the app's own pods and the KubeRay operator, and into the Serve ports the ingress controller.
  Every Ray cluster runs with token auth (`authOptions: {mode: token}`): KubeRay hands the token from the Secret
  `almquist-ray-token` (key `auth_token`) to every Ray container by `secretKeyRef` and uses it for its own calls.

Secrets are referenced, never written: every `*_env` the profile names (e.g. `password_env: NEO4J_PASSWORD`) becomes
an env var from a `secretKeyRef` on `almquist-secrets`. `python -m almquist.ops.kuberay` writes the files;
`--check` exits 1 with one sentence per difference when the committed files drifted from the profile or the plan
(for the Serve config: the deployment, the field and both values).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from almquist.limits import PROXY_ENV
from almquist.ops.placement import (
    NODE_TYPE_UNITS,
    NodeType,
    Plan,
    PlanError,
    load_plan,
    load_profile_for_plan,
    plan_path,
)
from almquist.runtime import REPO_ROOT, knowledge_args, profile_path

# There is no published image: build it from this repo on top of rayproject/ray:2.60.0-py311-gpu (kuberay/README.md).
IMAGE = "ghcr.io/almquist/almquist:0.1.0"
RAY_VERSION = "2.60.0"  # the Ray in IMAGE; KubeRay reads rayVersion to pick its defaults
OUT_DIR = REPO_ROOT / "kuberay"
RAYSERVICE_FILE = "rayservice.yaml"
NOTEBOOKS_FILE = "raycluster-notebooks.yaml"
INGESTION_FILE = "rayjob-ingestion.yaml"
COMMAND = "python -m almquist.ops.kuberay"

SERVICE_NAME = "almquist"
NOTEBOOKS_NAME = "almquist-notebooks"
INGESTION_NAME = "almquist-ingest-metaqa"
GRPC_SERVICE_NAME = "almquist-grpc"
SECRET_NAME = "almquist-secrets"  # created by the operator with kubectl (kuberay/README.md), never committed
SECURITY_FILE = "security.yaml"
# Ray's token (key `auth_token`, as KubeRay's authOptions.secretName wants), created with kubectl, never committed.
RAY_TOKEN_SECRET = "almquist-ray-token"
AUTH_OPTIONS = {"mode": "token", "secretName": RAY_TOKEN_SECRET}
# TLS on Kubernetes: cert-manager issues the certificate into TLS_SECRET; the ingress controller terminates TLS.
TLS_SECRET = "almquist-tls"
CERTIFICATE_NAME = "almquist-tls"
ISSUER_REF = {"name": "almquist-issuer", "kind": "ClusterIssuer", "group": "cert-manager.io"}  # made by the operator
HTTP_HOST = "almquist.example.com"  # placeholders: the names clients use (kuberay/README.md)
GRPC_HOST = "grpc.almquist.example.com"
INGRESS_CLASS = "nginx"  # ingress-nginx: gRPC by `backend-protocol: GRPC`, WebSockets as they come
INGRESS_NAMESPACE = "ingress-nginx"  # where the ingress controller runs (its namespace's standard name label)
MONITORING_NAMESPACE = "monitoring"  # Prometheus, scraping the metrics port
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}  # the KubeRay operator's pods, any namespace
SERVE_SERVICE = f"{SERVICE_NAME}-serve-svc"  # KubeRay's Service for the RayService's HTTP port

# Read-only volumes the pods mount: the model weights the profile names by path, and the data sets ingestion reads.
MODELS_CLAIM, MODELS_MOUNT = "almquist-models", "/models"
DATA_CLAIM, DATA_MOUNT = "almquist-data", "/data"

GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource
# NVIDIA GPU feature discovery labels every GPU node with its product; the plan names the card by its marketing name.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_PRODUCTS = {"NVIDIA RTX 6000 Ada": "NVIDIA-RTX-6000-Ada-Generation"}

GCS_PORT = 6379
DASHBOARD_PORT = 8265
METRICS_PORT = 8080
CLIENT_PORT = 10001  # Ray Client, for notebooks

# Kept free on every workstation: a worker pod asking for the whole machine would never schedule, and the kubelet,
# the GPU device plugin, the Ray heads and the CPU pods of the notebook cluster and the ingestion job live there too.
NODE_RESERVE_CPUS = 16
NODE_RESERVE_MEMORY_GIB = 64

# `NewCluster` (KubeRay's default) brings up a second, equal RayCluster and switches traffic once it is ready: the
# RayService takes every GPU of the plan, so that second cluster could never schedule and the upgrade would hang.
# `NewClusterWithIncrementalUpgrade` (alpha, Gateway API) needs a second `speech` pod at its first step already.
# With `None`, serveConfigV2 changes are applied in place by Serve and a cluster change is a planned re-create
# (kuberay/README.md).
UPGRADE_STRATEGY = "None"

LABELS = {"app.kubernetes.io/name": "almquist", "app.kubernetes.io/part-of": "almquist"}


class KubeRayError(ValueError):
    """The profile or plan cannot be rendered as manifests; the message says what to change."""


# ---- small builders ----
def _cpu(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def _labels(component: str) -> dict[str, str]:
    return {**LABELS, "app.kubernetes.io/component": component}


def _ray_resources_param(resources: dict[str, int]) -> str:
    """`rayStartParams.resources` as KubeRay wants it: a JSON object inside double quotes with its quotes escaped,
    because KubeRay pastes it into `ray start --resources=...` through a shell."""
    return '"' + json.dumps(resources).replace('"', '\\"') + '"'


def parse_ray_resources_param(value: str) -> dict[str, float]:
    """The inverse of the format above (also accepts a bare JSON object): what the shell hands to `ray start`."""
    text = value.strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"')
    return json.loads(text)


def secret_env_names(value: Any) -> list[str]:
    """Every environment variable the profile's args name through a `*_env` key (a password, an API key): the
    pods get each from the secret by reference. In order of first appearance, without repeats."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                if key.endswith("_env") and isinstance(item, str) and item not in found:
                    found.append(item)
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(value)
    return found


def _secret_key(env_name: str) -> str:
    return env_name.lower().replace("_", "-")  # NEO4J_PASSWORD -> neo4j-password


def _env(secret_envs: list[str], *, gpus: int, data: bool) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": _secret_key(name)}}}
        for name in secret_envs
    ]
    # the Serve gRPC proxy's global message cap (almquist/limits.py), on every node a proxy may run
    env += [{"name": name, "value": value} for name, value in PROXY_ENV.items()]
    if data:
        env.append({"name": "ALMQUIST_DATA_DIR", "value": DATA_MOUNT})
    if not gpus:
        # The CUDA base image sets NVIDIA_VISIBLE_DEVICES=all: on a node whose default runtime is NVIDIA's, a container
        # without a GPU limit would still see every card. `void` hides them.
        env.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    return env


def _ports(spec: list[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in spec]


def _pod_template(
    component: str,
    container_name: str,
    *,
    cpus: float,
    memory_gib: int,
    gpus: int,
    ports: list[tuple[str, int]],
    env: list[dict[str, Any]],
    models: bool,
    data: bool,
    gpu_product: str | None = None,
) -> dict[str, Any]:
    """A Ray pod: one container with requests equal to limits (Guaranteed QoS, so Ray's view of the pod holds), the
    GPU taint tolerated (every workstation of this cluster has GPUs and carries it), and a GPU pod pinned to the
    plan's card by its product label."""
    amounts: dict[str, Any] = {"cpu": _cpu(cpus), "memory": f"{memory_gib}Gi"}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    # the object store and NCCL want more than Docker's 64 MiB
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    if models:
        mounts.append({"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": MODELS_CLAIM, "readOnly": True}})
    if data:
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM, "readOnly": True}})
    container: dict[str, Any] = {
        "name": container_name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "ports": _ports(ports),
        "env": env,
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
    }
    if gpus and gpu_product:
        spec["nodeSelector"] = {GPU_PRODUCT_LABEL: gpu_product}
    return {"metadata": {"labels": _labels(component)}, "spec": spec}


def _gpu_product(plan: Plan) -> str:
    try:
        return GPU_PRODUCTS[plan.gpu.model]
    except KeyError:
        raise KubeRayError(
            f"the plan's GPU {plan.gpu.model!r} has no {GPU_PRODUCT_LABEL} value in almquist.ops.kuberay.GPU_PRODUCTS;"
            f" add the label GPU feature discovery puts on its nodes (kubectl get nodes -L {GPU_PRODUCT_LABEL})"
        ) from None


def worker_pod_size(name: str, node_type: NodeType) -> tuple[float, int]:
    """(CPUs, GiB of memory) a worker pod of this node type asks for: the machine less the node reserve."""
    cpus = node_type.cpus - NODE_RESERVE_CPUS
    memory = int(node_type.memory_gib) - NODE_RESERVE_MEMORY_GIB
    if cpus <= 0 or memory <= 0:
        raise KubeRayError(
            f"node type {name}: {node_type.cpus:g} CPUs and {node_type.memory_gib:g} GiB leave nothing for a Ray pod"
            f" after the node reserve ({NODE_RESERVE_CPUS} CPUs, {NODE_RESERVE_MEMORY_GIB} GiB)"
        )
    return cpus, memory


# ---- the documents ----
def serve_config_text(schema: Any, source: str) -> str:
    """The profile as serveConfigV2: the parsed schema dumped back with only the fields the profile set."""
    body = yaml.safe_dump(schema.model_dump(mode="json", exclude_unset=True), sort_keys=False, width=1000)
    return f"# {source}, re-dumped by `{COMMAND}`\n{body}"


def _rayservice(schema: Any, plan: Plan, profile_label: str) -> list[dict[str, Any]]:
    secrets = secret_env_names([app.args for app in schema.applications])
    serve_port, grpc_port = schema.http_options.port, schema.grpc_options.port
    serve_ports = [("serve", serve_port), ("grpc", grpc_port), ("metrics", METRICS_PORT)]
    product = _gpu_product(plan)
    head = {
        # num-cpus 0 too: no replica lands beside the GCS and the Serve controller; the workers hold every replica.
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "template": _pod_template(
            "serve",
            "ray-head",
            cpus=4,
            memory_gib=16,
            gpus=0,
            ports=[("gcs", GCS_PORT), ("dashboard", DASHBOARD_PORT), *serve_ports],
            env=_env(secrets, gpus=0, data=False),
            models=True,
            data=False,
        ),
    }
    workers = []
    for type_name, node_type in plan.node_types.items():
        count = sum(1 for node in plan.nodes if node.type == type_name)
        if not count:
            continue
        cpus, memory = worker_pod_size(type_name, node_type)
        workers.append(
            {
                "groupName": type_name,
                # The fleet is fixed (one pod per workstation of the type); Serve autoscales replicas inside it, and
                # the plan proves the autoscaling maximum fits.
                "replicas": count,
                "minReplicas": count,
                "maxReplicas": count,
                "rayStartParams": {
                    "num-cpus": _cpu(cpus),
                    "num-gpus": str(node_type.gpus),
                    "resources": _ray_resources_param({f"node_type_{type_name}": NODE_TYPE_UNITS}),
                },
                "template": _pod_template(
                    "serve",
                    "ray-worker",
                    cpus=cpus,
                    memory_gib=memory,
                    gpus=node_type.gpus,
                    ports=serve_ports,
                    env=_env(secrets, gpus=node_type.gpus, data=False),
                    models=True,
                    data=False,
                    gpu_product=product,
                ),
            }
        )
    rayservice = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": SERVICE_NAME, "labels": _labels("serve")},
        "spec": {
            "upgradeStrategy": {"type": UPGRADE_STRATEGY},
            "serveConfigV2": serve_config_text(schema, profile_label),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "authOptions": dict(AUTH_OPTIONS),
                "enableInTreeAutoscaling": False,
                "headGroupSpec": head,
                "workerGroupSpecs": workers,
            },
        },
    }
    # KubeRay's `<name>-serve-svc` carries only the port named `serve` (HTTP); gRPC clients need their own Service.
    # `ray.io/serve: "true"` is the label KubeRay keeps on pods whose Serve proxy is healthy.
    grpc_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": GRPC_SERVICE_NAME, "labels": _labels("serve")},
        "spec": {
            "type": "ClusterIP",
            "selector": {**_labels("serve"), "ray.io/serve": "true"},
            "ports": [
                {
                    "name": "grpc",
                    "port": grpc_port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
        },
    }
    return [rayservice, grpc_service]


def _raycluster_notebooks(schema: Any) -> list[dict[str, Any]]:
    secrets = secret_env_names([app.args for app in schema.applications])
    head = {
        # num-cpus 0: every task goes to a worker, which is what makes the autoscaler add them.
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "template": _pod_template(
            "notebooks",
            "ray-head",
            cpus=2,
            memory_gib=8,
            gpus=0,
            ports=[
                ("gcs", GCS_PORT),
                ("dashboard", DASHBOARD_PORT),
                ("client", CLIENT_PORT),
                ("metrics", METRICS_PORT),
            ],
            env=_env(secrets, gpus=0, data=True),
            models=True,
            data=True,
        ),
    }
    # CPU only: the RayService holds every GPU; notebooks reach the models through the deployed graphs over gRPC.
    worker = {
        "groupName": "cpu",
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": 4,
        "rayStartParams": {"num-cpus": "8", "num-gpus": "0"},
        "template": _pod_template(
            "notebooks",
            "ray-worker",
            cpus=8,
            memory_gib=32,
            gpus=0,
            ports=[("metrics", METRICS_PORT)],
            env=_env(secrets, gpus=0, data=True),
            models=True,
            data=True,
        ),
    }
    return [
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": NOTEBOOKS_NAME, "labels": _labels("notebooks")},
            "spec": {
                "rayVersion": RAY_VERSION,
                "authOptions": dict(AUTH_OPTIONS),
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": "Default",
                    "idleTimeoutSeconds": 600,  # a researcher's pause between cells should not cost the workers
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "512Mi"},
                        "limits": {"cpu": "500m", "memory": "512Mi"},
                    },
                },
                "headGroupSpec": head,
                "workerGroupSpecs": [worker],
            },
        }
    ]


def ingestion_entrypoint(schema: Any) -> str:
    """`python -m ingestion metaqa` into the profile's knowledge stores (its `knowledge` args as JSON, as `almquist
    up` passes them), reading kb.txt from the data volume."""
    knowledge, _ = knowledge_args(schema)
    # The job's own cluster has CPU workers only: its embedding actors run there, not on the serving GPUs.
    knowledge = {**knowledge, "embed_num_gpus": 0.0, "embed_resources": {}}
    if "embeddings" in knowledge:
        knowledge["embeddings"] = {**knowledge["embeddings"], "device": "cpu"}
    command = ["python", "-m", "ingestion", "--knowledge", json.dumps(knowledge, sort_keys=True)]
    return shlex.join([*command, "metaqa", "--kb", f"{DATA_MOUNT}/metaqa/kb.txt"])


def _rayjob_ingestion(schema: Any) -> list[dict[str, Any]]:
    secrets = secret_env_names([app.args for app in schema.applications])
    head = {
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "template": _pod_template(
            "ingestion",
            "ray-head",
            cpus=2,
            memory_gib=8,
            gpus=0,
            ports=[("gcs", GCS_PORT), ("dashboard", DASHBOARD_PORT), ("metrics", METRICS_PORT)],
            env=_env(secrets, gpus=0, data=True),
            models=False,
            data=True,
        ),
    }
    # Entity names are embedded on CPU (the knowledge config's MiniLM); the tasks read kb.txt by byte ranges, so
    # every worker mounts the same data volume as the driver.
    worker = {
        "groupName": "cpu",
        "replicas": 2,
        "minReplicas": 2,
        "maxReplicas": 2,
        "rayStartParams": {"num-cpus": "6", "num-gpus": "0"},
        "template": _pod_template(
            "ingestion",
            "ray-worker",
            cpus=6,
            memory_gib=24,
            gpus=0,
            ports=[("metrics", METRICS_PORT)],
            env=_env(secrets, gpus=0, data=True),
            models=False,
            data=True,
        ),
    }
    return [
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "metadata": {"name": INGESTION_NAME, "labels": _labels("ingestion")},
            "spec": {
                "entrypoint": ingestion_entrypoint(schema),
                "submissionMode": "K8sJobMode",
                "shutdownAfterJobFinishes": True,
                "ttlSecondsAfterFinished": 600,  # ten minutes to read the logs before the cluster goes
                # Ingestion is idempotent and resumes from its last committed batch: a retry costs only the rest.
                "backoffLimit": 2,
                "activeDeadlineSeconds": 7200,
                "rayClusterSpec": {
                    "rayVersion": RAY_VERSION,
                    "authOptions": dict(AUTH_OPTIONS),
                    "enableInTreeAutoscaling": False,
                    "headGroupSpec": head,
                    "workerGroupSpecs": [worker],
                },
            },
        }
    ]


def _security(schema: Any) -> list[dict[str, Any]]:
    """The Certificate, the Ingresses that terminate TLS with it, and the NetworkPolicies."""
    http_port, grpc_port = schema.http_options.port, schema.grpc_options.port
    part_of = {"app.kubernetes.io/part-of": LABELS["app.kubernetes.io/part-of"]}
    certificate = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": CERTIFICATE_NAME, "labels": _labels("tls")},
        "spec": {
            "secretName": TLS_SECRET,
            "commonName": HTTP_HOST,
            "dnsNames": [HTTP_HOST, GRPC_HOST],
            "duration": "2160h",  # 90 days, renewed 30 days before the end
            "renewBefore": "720h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "digital signature", "key encipherment"],
            "issuerRef": dict(ISSUER_REF),
        },
    }

    def ingress(name: str, host: str, service: str, port: int, annotations: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "labels": _labels("tls"), "annotations": annotations},
            "spec": {
                "ingressClassName": INGRESS_CLASS,
                "tls": [{"hosts": [host], "secretName": TLS_SECRET}],
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": service, "port": {"number": port}}},
                                }
                            ]
                        },
                    }
                ],
            },
        }

    # Streams (Converse, avatar streams, the WebSocket bridge) stay open for long quiet stretches; bodies are the
    # app's to limit (a bidi stream's body is the whole stream).
    long_lived = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
        "nginx.ingress.kubernetes.io/proxy-body-size": "0",
    }
    grpc_ingress = ingress(
        f"{SERVICE_NAME}-grpc",
        GRPC_HOST,
        GRPC_SERVICE_NAME,
        grpc_port,
        {"nginx.ingress.kubernetes.io/backend-protocol": "GRPC", **long_lived},
    )
    http_ingress = ingress(f"{SERVICE_NAME}-http", HTTP_HOST, SERVE_SERVICE, http_port, dict(long_lived))

    def tcp(*ports: int | str) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": port} for port in ports]

    # Ray's pods (every cluster of these files): only the app's own pods, and the KubeRay operator (it reads Serve's
    # status and submits RayJobs through the dashboard, with the token) get in. Policies add up: the next one opens
    # the Serve ports to the ingress controller and the metrics port to Prometheus.
    ray_pods = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{SERVICE_NAME}-ray-internal", "labels": _labels("security")},
        "spec": {
            "podSelector": {"matchLabels": dict(part_of)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": dict(part_of)}}]},
                {
                    "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)}}],
                    "ports": tcp(DASHBOARD_PORT, GCS_PORT),
                },
            ],
        },
    }
    serve_pods = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{SERVICE_NAME}-serve-ingress", "labels": _labels("security")},
        "spec": {
            "podSelector": {"matchLabels": _labels("serve")},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": _namespace(INGRESS_NAMESPACE)}}],
                    "ports": tcp(http_port, grpc_port),
                },
                {
                    "from": [{"namespaceSelector": {"matchLabels": _namespace(MONITORING_NAMESPACE)}}],
                    "ports": tcp(METRICS_PORT),
                },
            ],
        },
    }
    return [certificate, grpc_ingress, http_ingress, ray_pods, serve_pods]


def _namespace(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name}  # the label Kubernetes puts on every namespace


def _label(path: Path) -> str:
    """A path as the messages and headers show it: relative to the repo when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _load(profile: str | Path, plan: str | Path | None) -> tuple[Any, Plan, Path, Path]:
    source = profile_path(profile)
    plan_file = Path(plan) if plan is not None else plan_path(source)
    return load_profile_for_plan(source), load_plan(plan_file), source, plan_file


def _render(schema: Any, plan: Plan, source: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        RAYSERVICE_FILE: _rayservice(schema, plan, _label(source)),
        NOTEBOOKS_FILE: _raycluster_notebooks(schema),
        INGESTION_FILE: _rayjob_ingestion(schema),
        SECURITY_FILE: _security(schema),
    }


def render(profile: str | Path = "cluster", plan: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """File name -> its Kubernetes documents, from a profile (name or path) and its plan (serve_config/plans/<stem>
    .yaml unless given). Raises `PlanError` for an unreadable profile or plan, `KubeRayError` for one that cannot
    be expressed as manifests."""
    schema, plan_model, source, _ = _load(profile, plan)
    return _render(schema, plan_model, source)


class _Dumper(yaml.SafeDumper):
    """Block style, literal blocks for multi-line strings (serveConfigV2 stays readable), and no anchors: one dict
    object used twice must come out twice, not as `&id001`."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(documents: list[dict[str, Any]], header: str) -> str:
    """The text of one manifest file: the header comment, then each document after `---`."""
    parts = [yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000) for doc in documents]
    return header + "".join(f"---\n{part}" for part in parts)


def _header(source: Path, plan_file: Path) -> str:
    return (
        f"# Generated by `{COMMAND}` from {_label(source)} and {_label(plan_file)}.\n"
        f"# Do not edit: change those and regenerate (`{COMMAND} --check` fails on drift).\n"
    )


def _texts(documents: dict[str, list[dict[str, Any]]], source: Path, plan_file: Path) -> dict[str, str]:
    return {name: to_yaml(docs, _header(source, plan_file)) for name, docs in documents.items()}


def render_text(profile: str | Path = "cluster", plan: str | Path | None = None) -> dict[str, str]:
    """File name -> the exact text `write` puts in it."""
    schema, plan_model, source, plan_file = _load(profile, plan)
    return _texts(_render(schema, plan_model, source), source, plan_file)


def write(
    directory: str | Path = OUT_DIR, profile: str | Path = "cluster", plan: str | Path | None = None
) -> list[Path]:
    """Writes every manifest into `directory` (created if missing); returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_text(profile, plan).items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


# ---- drift ----
_MISSING = object()


def _show(value: Any) -> str:
    return "not set" if value is _MISSING else json.dumps(value, ensure_ascii=False)


def _differences(got: Any, want: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, value in `got`, value in `want`) for every leaf where two parsed documents differ; `_MISSING`
    where a key is absent on one side. Lists of equal length are compared item by item."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in [*want, *(k for k in got if k not in want)]:
            where = f"{path}.{key}" if path else str(key)
            yield from _differences(got.get(key, _MISSING), want.get(key, _MISSING), where)
    elif isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        for index, (left, right) in enumerate(zip(got, want, strict=True)):
            yield from _differences(left, right, f"{path}[{index}]")
    elif got != want:
        yield path, got, want


def serve_config_drift(
    manifest_serve_config: dict[str, Any],
    profile_schema: Any,
    *,
    manifest: str = f"kuberay/{RAYSERVICE_FILE}",
    profile: str = "serve_config/cluster.yaml",
) -> list[str]:
    """How a manifest's serveConfigV2 (parsed YAML) differs from the profile (a `ServeDeploySchema`): one sentence
    per field, deployments by name, e.g. "LLMServer: autoscaling_config.max_replicas is 4 in
    kuberay/rayservice.yaml but 2 in serve_config/cluster.yaml". Empty when they agree."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        parsed = ServeDeploySchema.model_validate(manifest_serve_config)
    except ValidationError as error:
        first = error.errors()[0]
        return [
            f"{manifest}: serveConfigV2 is not a valid Serve config: {'.'.join(map(str, first['loc']))}:"
            f" {first['msg']} ({error.error_count()} errors)"
        ]
    ours = parsed.model_dump(mode="json", exclude_unset=True)
    theirs = profile_schema.model_dump(mode="json", exclude_unset=True)

    def sentence(subject: str, path: str, got: Any, want: Any) -> str:
        return f"{subject}: {path} is {_show(got)} in {manifest} but {_show(want)} in {profile}"

    messages = [
        sentence("serveConfigV2", path, got, want)
        for path, got, want in _differences(
            {k: v for k, v in ours.items() if k != "applications"},
            {k: v for k, v in theirs.items() if k != "applications"},
        )
    ]
    our_apps = {app.get("name", "default"): app for app in ours.get("applications", [])}
    their_apps = {app.get("name", "default"): app for app in theirs.get("applications", [])}
    for name in [*their_apps, *(n for n in our_apps if n not in their_apps)]:
        if name not in our_apps or name not in their_apps:
            where, missing = (profile, manifest) if name in their_apps else (manifest, profile)
            messages.append(f"application {name}: in {where} but not in {missing}")
            continue
        ours_app, theirs_app = our_apps[name], their_apps[name]
        for path, got, want in _differences(
            {k: v for k, v in ours_app.items() if k != "deployments"},
            {k: v for k, v in theirs_app.items() if k != "deployments"},
        ):
            messages.append(sentence(f"application {name}", path, got, want))
        our_deps = {d["name"]: d for d in ours_app.get("deployments", [])}
        their_deps = {d["name"]: d for d in theirs_app.get("deployments", [])}
        for dep in [*their_deps, *(d for d in our_deps if d not in their_deps)]:
            if dep not in our_deps or dep not in their_deps:
                where, missing = (profile, manifest) if dep in their_deps else (manifest, profile)
                messages.append(f"{dep}: in {where} but not in {missing}")
                continue
            messages.extend(
                sentence(dep, path, got, want) for path, got, want in _differences(our_deps[dep], their_deps[dep])
            )
    return messages


def _identity(doc: Any) -> tuple[str, str]:
    if not isinstance(doc, dict):
        return ("?", "?")
    return (str(doc.get("kind", "?")), str((doc.get("metadata") or {}).get("name", "?")))


def _document_drift(
    label: str, committed: list[Any], rendered: list[dict[str, Any]], schema: Any, profile: str
) -> list[str]:
    """The differences between one file's parsed documents and the rendered ones, matched by kind and name: a
    RayService's serveConfigV2 against the profile (`serve_config_drift`), everything else field by field."""
    messages: list[str] = []
    files = {_identity(doc): doc for doc in committed if doc is not None}
    for want in rendered:
        kind, name = _identity(want)
        got = files.pop((kind, name), None)
        if got is None:
            messages.append(f"{label}: has no {kind} {name}")
            continue
        want = json.loads(json.dumps(want))
        got = json.loads(json.dumps(got, default=str))
        if kind == "RayService":
            # The Serve config is compared field by field against the profile, deployment by deployment.
            spec = got.get("spec")
            text = spec.pop("serveConfigV2", None) if isinstance(spec, dict) else None
            want["spec"].pop("serveConfigV2")
            try:
                embedded = yaml.safe_load(text) if isinstance(text, str) else None
            except yaml.YAMLError as error:
                messages.append(f"{label}: serveConfigV2 is not valid YAML: {error}")
            else:
                if not isinstance(embedded, dict):
                    messages.append(f"{label}: RayService {name} has no serveConfigV2 mapping")
                else:
                    messages.extend(serve_config_drift(embedded, schema, manifest=label, profile=profile))
        differences = list(_differences(got, want))
        for path, left, right in differences[:20]:
            messages.append(f"{label}: {kind} {name} {path} is {_show(left)} in the file but {_show(right)} rendered")
        if len(differences) > 20:
            messages.append(f"{label}: {kind} {name}: {len(differences) - 20} more differences")
    for kind, name in files:
        messages.append(f"{label}: {kind} {name} is not generated from the profile")
    return messages


def drift(
    directory: str | Path = OUT_DIR, profile: str | Path = "cluster", plan: str | Path | None = None
) -> list[str]:
    """Every way the manifests in `directory` differ from a fresh render, one sentence each (for the Serve config:
    the deployment, the field and both values). Empty when the files are exactly what `write` would produce."""
    directory = Path(directory)
    schema, plan_model, source, plan_file = _load(profile, plan)
    rendered = _render(schema, plan_model, source)
    texts = _texts(rendered, source, plan_file)
    messages: list[str] = []
    for name, documents in rendered.items():
        path = directory / name
        label = _label(path)
        if not path.is_file():
            messages.append(f"{label}: missing")
            continue
        text = path.read_text()
        if text == texts[name]:
            continue
        try:
            committed = list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            messages.append(f"{label}: not valid YAML: {error}")
            continue
        found = _document_drift(label, committed, documents, schema, _label(source))
        messages.extend(found or [f"{label}: differs from the render in comments or layout only"])
    return messages


def main(argv: list[str] | None = None) -> int:
    """`python -m almquist.ops.kuberay [--check]`: 0 written (or in sync), 1 drift (one line each on stderr), 2 the
    profile or plan cannot be rendered."""
    parser = argparse.ArgumentParser(prog=COMMAND, description="Render kuberay/ from a Serve profile and its plan.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the render")
    parser.add_argument("--profile", default="cluster", help="profile name or path (default: cluster)")
    parser.add_argument("--plan", help="placement plan (default: serve_config/plans/<profile>.yaml)")
    parser.add_argument("--dir", type=Path, default=OUT_DIR, help="where the manifests live (default: kuberay/)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = drift(args.dir, args.profile, args.plan)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print(f"regenerate with `{COMMAND}` (and review the diff)", file=sys.stderr)
                return 1
            print(f"{_label(args.dir)} is in sync with the profile")
            return 0
        for path in write(args.dir, args.profile, args.plan):
            print(f"wrote {_label(path)}")
    except (PlanError, KubeRayError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
