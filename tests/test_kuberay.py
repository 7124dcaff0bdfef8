"""kuberay/: the manifests are exactly the render of the `cluster` profile and its plan, the Ray resources validate
against KubeRay's own CRD schemas, the core objects against Kubernetes' schemas, the embedded serveConfigV2 is the
profile, and a manifest that drifted from the profile fails naming the deployment and both numbers."""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from almquist import runtime
from almquist.config import data_dir
from almquist.ops import kuberay, placement

CRD_DIR = data_dir() / "kuberay-crds"  # KubeRay's CRDs, see its README
CRD_FILES = {
    "RayService": "ray.io_rayservices.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
}
# The oldest and the newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships that we claim to run on.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|CREDENTIAL", re.IGNORECASE)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@functools.cache
def rendered() -> dict[str, list[dict[str, Any]]]:
    return kuberay.render("cluster")


@functools.cache
def profile() -> Any:
    return placement.load_profile_for_plan("cluster")


@functools.cache
def plan() -> placement.Plan:
    return placement.load_plan(placement.plan_path("cluster"))


def documents(kind: str) -> list[dict[str, Any]]:
    return [doc for docs in rendered().values() for doc in docs if doc["kind"] == kind]


def rayservice() -> dict[str, Any]:
    (doc,) = documents("RayService")
    return doc


def cluster_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(resource name, RayCluster spec) of every Ray cluster the manifests create."""
    yield "RayService/almquist", rayservice()["spec"]["rayClusterConfig"]
    for doc in documents("RayCluster"):
        yield f"RayCluster/{doc['metadata']['name']}", doc["spec"]
    for doc in documents("RayJob"):
        yield f"RayJob/{doc['metadata']['name']}", doc["spec"]["rayClusterSpec"]


def pod_templates() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, group spec, pod template) of every head and worker group."""
    for where, spec in cluster_specs():
        yield f"{where} head", spec["headGroupSpec"], spec["headGroupSpec"]["template"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{where} {group['groupName']}", group, group["template"]


# ---- a validator for CRD schemas ----
def _structural(schema: Any) -> Any:
    """A CRD's OpenAPI v3 schema as JSON Schema (draft 4, whose boolean exclusiveMinimum OpenAPI 3.0 shares) that
    judges the way the API server does with kubectl's default `--validate=strict`:
    - an object that lists `properties` rejects other fields, unless `x-kubernetes-preserve-unknown-fields`;
    - `x-kubernetes-int-or-string` / `format: int-or-string` accept an integer or a string;
    - `nullable: true` accepts null.
    CEL rules (`x-kubernetes-validations`) and list-map keys are checked by the keywords in `CRDValidator`."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _structural(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_structural(sub) for sub in value]
        else:
            out[key] = value
    if (out.get("x-kubernetes-int-or-string") or out.get("format") == "int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        return {"anyOf": [{"type": "null"}, out]}
    return out


def _cel_rules(validator: Any, rules: list[dict[str, str]], instance: Any, schema: dict[str, Any]):
    # CEL cannot be evaluated here: a manifest that sets a field guarded by a rule fails until a person checks it.
    yield jsonschema.ValidationError(f"sets a field guarded by CEL rules this test cannot evaluate: {rules}")


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]):
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(instance, list):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        key = tuple(json.dumps(item.get(k)) for k in keys) if isinstance(item, dict) else (json.dumps(item),)
        if key in seen:
            yield jsonschema.ValidationError(f"two entries with the same {keys}: {key}")
        seen.add(key)


CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"x-kubernetes-validations": _cel_rules, "x-kubernetes-list-map-keys": _list_map_keys},
)
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: Any) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@functools.cache
def crd_validator(kind: str) -> Any:
    assert (CRD_DIR / CRD_FILES[kind]).is_file(), f"KubeRay's CRDs are missing at {CRD_DIR}: see its README"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(), Loader=loader)  # CSafeLoader: the CRDs are 60k lines
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
    return CRDValidator(_structural(version["schema"]["openAPIV3Schema"]), format_checker=FORMATS)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    errors = crd_validator(doc["kind"]).iter_errors(doc)
    return sorted(f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in errors)


def test_committed_files_equal_the_render() -> None:
    texts = kuberay.render_text("cluster")
    assert set(texts) == {
        kuberay.RAYSERVICE_FILE,
        kuberay.NOTEBOOKS_FILE,
        kuberay.INGESTION_FILE,
        kuberay.SECURITY_FILE,
    }
    for name, text in texts.items():
        committed = (kuberay.OUT_DIR / name).read_text()
        assert committed == text, f"kuberay/{name} drifted: run python -m almquist.ops.kuberay"
        assert committed.startswith("# Generated by `python -m almquist.ops.kuberay`")
        assert list(yaml.safe_load_all(committed)) == rendered()[name]
    assert kuberay.drift() == []
    assert kuberay.main(["--check"]) == 0


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_ray_resources_validate_against_kuberays_crds(kind: str) -> None:
    docs = documents(kind)
    assert docs, f"no {kind} rendered"
    for doc in docs:
        assert doc["apiVersion"] == "ray.io/v1"
        assert crd_errors(doc) == []
        assert DNS_LABEL.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63


def test_the_crd_validator_rejects_what_the_api_server_would() -> None:
    service = rayservice()
    broken = copy.deepcopy(service)
    del broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    assert crd_errors(broken) == [
        "spec.rayClusterConfig.workerGroupSpecs.0: 'groupName' is a required property",
    ]
    typo = copy.deepcopy(service)
    typo["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParam"] = {"num-gpus": "2"}
    assert any("'rayStartParam' was unexpected" in error for error in crd_errors(typo))
    number = copy.deepcopy(service)
    number["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 2
    assert any("2 is not of type 'string'" in error for error in crd_errors(number))
    quantity = copy.deepcopy(service)
    resources = quantity["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    resources["limits"]["cpu"] = 4  # int-or-string: an integer quantity is fine
    assert crd_errors(quantity) == []
    resources["limits"]["cpu"] = "four cores"  # but a string must be a quantity
    assert any("does not match" in error for error in crd_errors(quantity))
    duplicate = copy.deepcopy(service)
    ports = duplicate["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    ports.append(dict(ports[0]))  # the list-map key (containerPort, protocol) repeats
    assert any("two entries with the same" in error for error in crd_errors(duplicate))
    guarded = copy.deepcopy(service)
    guarded["spec"]["managedBy"] = "ray.io/kuberay-operator"  # CEL-guarded: fails closed
    assert any("CEL" in error for error in crd_errors(guarded))
    too_big = copy.deepcopy(documents("RayJob")[0])
    too_big["spec"]["ttlSecondsAfterFinished"] = 2**31  # format int32
    assert any("int32" in error for error in crd_errors(too_big))


def core_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every core object: the pod templates inside the Ray resources wrapped as `v1 PodTemplate`, and the plain
    Kubernetes documents the files carry."""
    for where, _, template in pod_templates():
        name = re.sub(r"[^a-z0-9-]+", "-", where.lower()).strip("-")
        yield where, {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
    for docs in rendered().values():
        for doc in docs:
            if not doc["apiVersion"].startswith(("ray.io/", "cert-manager.io/")):
                yield f"{doc['kind']}/{doc['metadata']['name']}", doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate_with_kubernetes_validate(version: str) -> None:
    objects = list(core_objects())
    assert {obj["kind"] for _, obj in objects} == {"PodTemplate", "Service", "Ingress", "NetworkPolicy"}
    for where, obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where} is not a valid {obj['kind']} on Kubernetes {version}: {error.message}")


def test_kubernetes_validate_rejects_a_broken_pod_template() -> None:
    _, template = next(core_objects())
    broken = copy.deepcopy(template)
    broken["template"]["spec"]["tolerations"][0]["efect"] = "NoSchedule"  # a typo strict validation must catch
    with pytest.raises(kubernetes_validate.ValidationError, match="efect"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    port = copy.deepcopy(template)
    port["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "gcs"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(port, KUBERNETES_VERSIONS[0], strict=True)


def test_serve_config_v2_is_the_profile() -> None:
    text = rayservice()["spec"]["serveConfigV2"]
    embedded = ServeDeploySchema.model_validate(yaml.safe_load(text))
    assert embedded.model_dump(exclude_unset=True) == profile().model_dump(exclude_unset=True)
    # and the very YAML a person wrote, not only what the schema keeps of it
    assert yaml.safe_load(text) == yaml.safe_load(runtime.profile_path("cluster").read_text())
    assert kuberay.serve_config_drift(yaml.safe_load(text), profile()) == []


def test_heads_have_no_gpus() -> None:
    for where, group, template in pod_templates():
        if not where.endswith(" head"):
            continue
        assert group["rayStartParams"]["num-gpus"] == "0", where
        (container,) = template["spec"]["containers"]
        for amounts in container["resources"].values():
            assert kuberay.GPU_RESOURCE not in amounts, where
        assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in container["env"], where


def test_worker_groups_are_the_plans_node_types() -> None:
    spec = rayservice()["spec"]["rayClusterConfig"]
    groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}
    counts = {name: sum(1 for node in plan().nodes if node.type == name) for name in plan().node_types}
    assert list(groups) == [name for name, count in counts.items() if count]
    for name, group in groups.items():
        node_type = plan().node_types[name]
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == counts[name]
        params = group["rayStartParams"]
        assert params["num-gpus"] == str(node_type.gpus)
        # the shell inside the pod turns the escaped string into the JSON `ray start --resources` parses
        assert shlex.split(f"--resources={params['resources']}") == [
            f'--resources={{"node_type_{name}": {placement.NODE_TYPE_UNITS}}}'
        ]
        assert kuberay.parse_ray_resources_param(params["resources"]) == {f"node_type_{name}": 1000}
        (container,) = group["template"]["spec"]["containers"]
        cpus, memory = kuberay.worker_pod_size(name, node_type)
        expected = {"cpu": str(int(cpus)), "memory": f"{memory}Gi"}
        if node_type.gpus:
            expected[kuberay.GPU_RESOURCE] = str(node_type.gpus)
        assert container["resources"] == {"requests": expected, "limits": expected}
        assert params["num-cpus"] == expected["cpu"]  # Ray schedules with what the pod really has


def test_gpu_pods_tolerate_the_taint_and_ask_for_their_cards() -> None:
    gpu_pods = 0
    for where, group, template in pod_templates():
        (container,) = template["spec"]["containers"]
        gpus = container["resources"]["limits"].get(kuberay.GPU_RESOURCE)
        if gpus is None:
            continue
        gpu_pods += 1
        assert container["resources"]["requests"][kuberay.GPU_RESOURCE] == gpus, where  # extended: requests == limits
        assert group["rayStartParams"]["num-gpus"] == gpus, where
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in template["spec"][
            "tolerations"
        ], where
        assert template["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-RTX-6000-Ada-Generation"}
        assert not any(env["name"] == "NVIDIA_VISIBLE_DEVICES" for env in container["env"]), where
    # one per GPU node type of the plan (the RayService's groups); notebooks and ingestion run on CPU
    assert gpu_pods == sum(
        1 for name, t in plan().node_types.items() if t.gpus and any(n.type == name for n in plan().nodes)
    )


def test_every_resource_the_profile_pins_to_is_declared() -> None:
    declared: dict[str, float] = {}
    for group in rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        for key, units in kuberay.parse_ray_resources_param(group["rayStartParams"]["resources"]).items():
            declared[key] = max(declared.get(key, 0), units)
    asked: dict[str, float] = {}
    for app in profile().applications:
        for deployment in app.deployments:
            options = placement._given(deployment.ray_actor_options)
            bundles = placement._given(deployment.placement_group_bundles) or []
            for resources in [getattr(options, "resources", None) or {}, *bundles]:
                for key, value in resources.items():
                    if key not in ("CPU", "GPU", "memory"):
                        asked[key] = max(asked.get(key, 0), float(value))
    assert "node_type_llm" in asked, "the profile pins LLMServer to the llm nodes"
    for key, value in asked.items():
        assert declared.get(key, 0) >= value, f"{key}: the profile asks for it but no worker group declares it"


def test_the_plan_still_places_on_the_pods_kuberay_creates() -> None:
    """The plan was checked against whole workstations; the worker pods get less (the node reserve). The same
    checker must still place every replica, at start and at the autoscaling maximum, on pods of that size."""
    shrunk = {
        name: node_type.model_copy(
            update={
                "cpus": kuberay.worker_pod_size(name, node_type)[0],
                "memory_gib": kuberay.worker_pod_size(name, node_type)[1],
            }
        )
        for name, node_type in plan().node_types.items()
    }
    report = placement.check(profile(), plan().model_copy(update={"node_types": shrunk}))
    assert report.ok, report.errors


def test_no_secret_is_written_only_referenced() -> None:
    names = kuberay.secret_env_names([app.args for app in profile().applications])
    assert sorted(names) == ["NEO4J_PASSWORD", "POSTGRES_PASSWORD"]  # the graph's and the durable state's
    assert not [doc for docs in rendered().values() for doc in docs if doc["kind"] == "Secret"]
    for where, _, template in pod_templates():
        (container,) = template["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert env["NEO4J_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "almquist-secrets", "key": "neo4j-password"}
        }, where
        assert env["POSTGRES_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "almquist-secrets", "key": "postgres-password"}
        }, where
        for name, item in env.items():
            if SECRET_NAME.search(name):
                assert "value" not in item and "secretKeyRef" in item["valueFrom"], f"{where}: {name} is literal"


def test_ports_follow_the_profile() -> None:
    schema = profile()
    spec = rayservice()["spec"]["rayClusterConfig"]
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in head["ports"]}
    assert ports == {
        "gcs": 6379,
        "dashboard": 8265,
        "serve": schema.http_options.port,
        "grpc": schema.grpc_options.port,
        "metrics": 8080,
    }
    for group in spec["workerGroupSpecs"]:  # every node runs a proxy (proxy_location: EveryNode)
        (worker,) = group["template"]["spec"]["containers"]
        assert {p["name"]: p["containerPort"] for p in worker["ports"]} == {
            "serve": 8000,
            "grpc": 9000,
            "metrics": 8080,
        }
    (grpc,) = documents("Service")
    assert grpc["spec"]["ports"][0]["port"] == schema.grpc_options.port
    assert grpc["spec"]["ports"][0]["targetPort"] == "grpc"
    assert grpc["spec"]["selector"]["ray.io/serve"] == "true"
    pod_labels = spec["headGroupSpec"]["template"]["metadata"]["labels"]
    assert {k: v for k, v in grpc["spec"]["selector"].items() if k != "ray.io/serve"}.items() <= pod_labels.items()


def test_every_model_path_of_the_profile_is_on_a_mounted_volume() -> None:
    paths = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, str) and node.startswith("/"):
            paths.append(node)

    for app in profile().applications:
        walk(app.args)
    assert paths, "the cluster profile names its models by path"
    for where, _, template in pod_templates():
        if not where.startswith("RayService"):
            continue
        (container,) = template["spec"]["containers"]
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        for path in paths:
            assert any(Path(path).is_relative_to(mount) for mount in mounts), f"{where}: {path} is not mounted"


def test_the_ingestion_job_runs_metaqa_into_the_profiles_stores() -> None:
    (job,) = documents("RayJob")
    spec = job["spec"]
    python, m, module, knowledge_flag, knowledge_json, command, kb_flag, kb = shlex.split(spec["entrypoint"])
    assert [python, m, module, knowledge_flag, command, kb_flag] == [
        "python",
        "-m",
        "ingestion",
        "--knowledge",
        "metaqa",
        "--kb",
    ]
    knowledge, _ = runtime.knowledge_args(profile())
    given = json.loads(knowledge_json)
    for key in ("graph", "vectors"):  # the stores the RayService reads from, password by env name
        assert given[key] == knowledge[key]
    # the job's CPU cluster embeds: no GPU fraction, no pin to the serving cluster's GPU node types
    assert given["embed_num_gpus"] == 0 and given["embed_resources"] == {} and given["embeddings"]["device"] == "cpu"
    assert knowledge["embed_num_gpus"] > 0  # while the profile's own ingestion embeds on a GPU fraction
    assert Path(kb) == Path(kuberay.DATA_MOUNT) / "metaqa" / "kb.txt"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    for group in [spec["rayClusterSpec"]["headGroupSpec"], *spec["rayClusterSpec"]["workerGroupSpecs"]]:
        (container,) = group["template"]["spec"]["containers"]
        assert kuberay.DATA_MOUNT in [m["mountPath"] for m in container["volumeMounts"]]


def test_the_notebook_cluster_autoscales_and_takes_ray_client() -> None:
    (cluster,) = documents("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert {"name": "client", "containerPort": 10001, "protocol": "TCP"} in head["ports"]
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 < group["maxReplicas"]


def test_upgrade_strategy_is_one_the_crd_knows_and_fits_the_hardware() -> None:
    strategy = rayservice()["spec"]["upgradeStrategy"]["type"]
    assert strategy in {"NewCluster", "NewClusterWithIncrementalUpgrade", "None"}
    # NewCluster needs a second RayCluster as large as the first: here that would be more GPUs than the plan has.
    needed = sum(
        group["replicas"] * int(group["rayStartParams"]["num-gpus"])
        for group in rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    )
    available = sum(plan().node_types[node.type].gpus for node in plan().nodes)
    assert 2 * needed > available
    assert strategy == "None"


def drifted_profile(tmp_path: Path, max_replicas: int) -> Path:
    raw = yaml.safe_load(runtime.profile_path("cluster").read_text())
    (llm,) = [d for app in raw["applications"] for d in app["deployments"] if d["name"] == "LLMServer"]
    llm["autoscaling_config"]["max_replicas"] = max_replicas
    path = tmp_path / "profile" / "cluster.yaml"  # same stem: the render finds serve_config/plans/cluster.yaml
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_manifest_that_drifted_from_the_profile_names_the_deployment_and_the_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kuberay"
    kuberay.write(out, drifted_profile(tmp_path, max_replicas=4))
    problems = kuberay.drift(out)
    expected = (
        f"LLMServer: autoscaling_config.max_replicas is 4 in {out / 'rayservice.yaml'} but 2 in"
        " serve_config/cluster.yaml"
    )
    # the Serve config of rayservice.yaml drifted; the other files differ only in the header naming their source
    assert problems[0] == expected
    assert all(problem.endswith("in comments or layout only") for problem in problems[1:]), problems
    assert kuberay.main(["--check", "--dir", str(out)]) == 1
    assert expected in capsys.readouterr().err


def test_drift_in_the_cluster_part_names_the_field(tmp_path: Path) -> None:
    kuberay.write(tmp_path)
    path = tmp_path / kuberay.RAYSERVICE_FILE
    llm = "groupName: llm\n      replicas: {}\n"
    path.write_text(path.read_text().replace(llm.format(2), llm.format(3)))
    assert kuberay.drift(tmp_path) == [
        f"{path}: RayService almquist spec.rayClusterConfig.workerGroupSpecs[0].replicas is 3 in the file but 2"
        " rendered"
    ]
    (tmp_path / kuberay.NOTEBOOKS_FILE).unlink()
    assert f"{tmp_path / kuberay.NOTEBOOKS_FILE}: missing" in kuberay.drift(tmp_path)


def test_serve_config_drift_reports_missing_and_changed_deployments() -> None:
    raw = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    deployments = raw["applications"][0]["deployments"]
    deployments[:] = [d for d in deployments if d["name"] != "Embeddings"]
    router = next(d for d in deployments if d["name"] == "Router")
    router["ray_actor_options"]["num_cpus"] = 2
    raw["grpc_options"]["port"] = 9100
    assert kuberay.serve_config_drift(raw, profile()) == [
        "serveConfigV2: grpc_options.port is 9100 in kuberay/rayservice.yaml but 9000 in serve_config/cluster.yaml",
        "Router: ray_actor_options.num_cpus is 2.0 in kuberay/rayservice.yaml but 1.0 in serve_config/cluster.yaml",
        "Embeddings: in serve_config/cluster.yaml but not in kuberay/rayservice.yaml",
    ]
    raw["applications"][0]["deployments"][0]["autoscaling_config"] = "lots"
    (message,) = kuberay.serve_config_drift(raw, profile())
    assert "serveConfigV2 is not a valid Serve config" in message


def test_an_unknown_gpu_model_is_refused_with_what_to_add(tmp_path: Path) -> None:
    raw = yaml.safe_load(placement.plan_path("cluster").read_text())
    raw["gpu"]["model"] = "NVIDIA H100 80GB HBM3"
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(raw))
    with pytest.raises(kuberay.KubeRayError, match="GPU_PRODUCTS"):
        kuberay.render("cluster", plan_file)


# ---- TLS and the locked cluster (security.yaml, authOptions) ----
def test_every_ray_cluster_runs_with_token_auth_from_a_secret_by_reference() -> None:
    """KubeRay's authOptions: it puts RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (a secretKeyRef on the named Secret's
    `auth_token`) into every Ray container and sends the token on its own calls to the dashboard."""
    for where, spec in cluster_specs():
        assert spec["authOptions"] == {"mode": "token", "secretName": kuberay.RAY_TOKEN_SECRET}, where
    for where, _, template in pod_templates():
        (container,) = template["spec"]["containers"]
        names = {item["name"] for item in container["env"]}
        assert not names & {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE"}, f"{where}: KubeRay sets these from authOptions"
    assert not documents("Secret")


def certificate() -> dict[str, Any]:
    (doc,) = documents("Certificate")
    return doc


# cert-manager v1 `Certificate.spec` (cert-manager.io_certificates CRD, v1.17): no package ships the CRD's YAML, so
# the fields and enums this file uses are checked against this excerpt of it.
CERTIFICATE_SPEC_FIELDS = {
    "additionalOutputFormats", "commonName", "dnsNames", "duration", "emailAddresses", "encodeUsagesInRequest",
    "ipAddresses", "isCA", "issuerRef", "keystores", "literalSubject", "nameConstraints", "otherNames", "privateKey",
    "renewBefore", "renewBeforePercentage", "revisionHistoryLimit", "secretName", "secretTemplate",
    "signatureAlgorithm", "subject", "uris", "usages",
}  # fmt: skip
PRIVATE_KEY_FIELDS = {"algorithm": {"RSA", "ECDSA", "Ed25519"}, "encoding": {"PKCS1", "PKCS8"},
                      "rotationPolicy": {"Never", "Always"}, "size": None}  # fmt: skip
KEY_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement", "data encipherment",
    "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth", "client auth", "code signing",
    "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
}  # fmt: skip
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?$")


def _hours(duration: str) -> float:
    hours, minutes, seconds = (re.search(rf"(\d+){unit}", duration) for unit in "hms")
    return sum(int(m.group(1)) / f for m, f in ((hours, 1), (minutes, 60), (seconds, 3600)) if m)


def check_certificate(doc: dict[str, Any]) -> None:
    """Raises AssertionError where cert-manager v1 would refuse the Certificate (or ignore a misspelt field)."""
    assert doc["apiVersion"] == "cert-manager.io/v1" and doc["kind"] == "Certificate"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"} and DNS_LABEL.match(doc["metadata"]["name"])
    spec = doc["spec"]
    assert set(spec) <= CERTIFICATE_SPEC_FIELDS, set(spec) - CERTIFICATE_SPEC_FIELDS
    assert spec["secretName"] and spec["issuerRef"]["name"]  # required
    assert set(spec["issuerRef"]) <= {"name", "kind", "group"}
    key = spec.get("privateKey", {})
    assert set(key) <= set(PRIVATE_KEY_FIELDS), set(key) - set(PRIVATE_KEY_FIELDS)
    for field, allowed in PRIVATE_KEY_FIELDS.items():
        assert allowed is None or field not in key or key[field] in allowed, f"privateKey.{field}: {key.get(field)}"
    assert key.get("algorithm") != "ECDSA" or key.get("size", 256) in (256, 384, 521)
    assert set(spec.get("usages", [])) <= KEY_USAGES
    for field in ("duration", "renewBefore"):
        assert field not in spec or GO_DURATION.match(spec[field]), field
    if "duration" in spec and "renewBefore" in spec:  # cert-manager refuses renewBefore >= duration
        assert 0 < _hours(spec["renewBefore"]) < _hours(spec["duration"])
    assert all(DNS_LABEL.match(label) for name in spec.get("dnsNames", []) for label in name.split("."))


def test_the_certificate_is_a_cert_manager_v1_certificate() -> None:
    doc = certificate()
    check_certificate(doc)
    spec = doc["spec"]
    assert spec["secretName"] == kuberay.TLS_SECRET and spec["issuerRef"] == kuberay.ISSUER_REF
    assert spec["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer") and "server auth" in spec["usages"]


@pytest.mark.parametrize(
    "change",
    [
        {"dnsName": ["typo.example.com"]},  # misspelt: cert-manager would drop it and issue without the names
        {"privateKey": {"algorithm": "DSA"}},
        {"renewBefore": "3000h"},
        {"usages": ["server auth", "web server"]},
    ],
)
def test_the_certificate_check_rejects_what_cert_manager_would(change: dict[str, Any]) -> None:
    broken = copy.deepcopy(certificate())
    broken["spec"].update(change)
    with pytest.raises(AssertionError):
        check_certificate(broken)


def test_the_ingresses_terminate_tls_with_the_certificates_secret_in_front_of_the_serve_ports() -> None:
    schema, spec = profile(), certificate()["spec"]
    ingresses = {doc["metadata"]["name"]: doc for doc in documents("Ingress")}
    grpc_ingress, http_ingress = ingresses["almquist-grpc"], ingresses["almquist-http"]
    for doc in ingresses.values():
        (tls,) = doc["spec"]["tls"]
        assert tls["secretName"] == spec["secretName"]
        assert set(tls["hosts"]) <= set(spec["dnsNames"])
        assert [rule["host"] for rule in doc["spec"]["rules"]] == tls["hosts"]
    assert grpc_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    (grpc_path,) = grpc_ingress["spec"]["rules"][0]["http"]["paths"]
    assert grpc_path["backend"]["service"] == {
        "name": kuberay.GRPC_SERVICE_NAME,
        "port": {"number": schema.grpc_options.port},
    }
    (grpc_service,) = documents("Service")
    assert grpc_service["metadata"]["name"] == kuberay.GRPC_SERVICE_NAME
    (http_path,) = http_ingress["spec"]["rules"][0]["http"]["paths"]
    assert http_path["backend"]["service"] == {
        "name": f"{kuberay.SERVICE_NAME}-serve-svc",  # KubeRay's name for the RayService's HTTP Service
        "port": {"number": schema.http_options.port},
    }


def test_network_policies_let_only_the_app_the_operator_and_the_ingress_in() -> None:
    schema = profile()
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in documents("NetworkPolicy")}
    internal, serve = policies["almquist-ray-internal"], policies["almquist-serve-ingress"]
    for where, _, template in pod_templates():  # every Ray pod is selected, so the policy closes it
        labels = template["metadata"]["labels"]
        assert internal["podSelector"]["matchLabels"].items() <= labels.items(), where
    app, operator = internal["ingress"]
    assert app == {"from": [{"podSelector": internal["podSelector"]}]}
    assert operator["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}
    ]
    assert {port["port"] for port in operator["ports"]} == {kuberay.DASHBOARD_PORT, kuberay.GCS_PORT}
    public, metrics = serve["ingress"]
    assert public["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert {port["port"] for port in public["ports"]} == {schema.http_options.port, schema.grpc_options.port}
    assert {port["port"] for port in metrics["ports"]} == {kuberay.METRICS_PORT}
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress"]
        assert all(rule.get("from") for rule in spec["ingress"]), "a rule without `from` admits every source"
