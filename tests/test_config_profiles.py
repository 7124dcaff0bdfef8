"""Every Serve config profile is valid in Ray's own schema and in ours, and points at real code."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import RayActorOptionsSchema, ServeDeploySchema

from almquist import runtime
from almquist.config import AppConfig, ConversationConfig, RouterConfig, resolve_model_ref
from graphs.web_avatar import WebAvatarConfig

REPO = Path(__file__).resolve().parent.parent
PROFILES = sorted((REPO / "serve_config").glob("*.yaml"))


def import_attr(path: str):
    module, _, name = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), name)


def gpus_of(deployment) -> float:
    """GPUs per replica: the placement group's bundles when it has them, else the actor's own num_gpus."""
    bundles = deployment.placement_group_bundles
    if isinstance(bundles, list):
        return sum(bundle.get("GPU", 0) for bundle in bundles)
    options = deployment.ray_actor_options
    return (options.num_gpus if isinstance(options, RayActorOptionsSchema) else None) or 0


def test_both_profiles_exist():
    assert {p.stem for p in PROFILES} >= {"local", "cluster"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_parses_with_ray_schema_and_app_config(path):
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    assert schema.grpc_options.port == 9000 and schema.http_options.port == 8000
    for servicer in schema.grpc_options.grpc_servicer_functions:
        assert callable(import_attr(servicer))
    assert {app.name for app in schema.applications} == {"conversation", "avatar_web"}
    for app in schema.applications:
        assert callable(import_attr(app.import_path))
        if app.name == "avatar_web":  # the browser avatar (web/): a static page and a WebSocket bridge to Converse
            WebAvatarConfig.model_validate(app.args)
            assert {d.name for d in app.deployments} == {"WebAvatar"}
            continue
        config = AppConfig.model_validate(app.args)  # our typed config accepts the profile's args
        # every deployment the profile tunes is one the graph builds from these args, and vice versa
        vision = {
            "detection": "Detection",
            "depth": "Depth",
            "segmentation": "Segmentation",
            "gestures": "Gestures",
            "scene_changes": "SceneChanges",
            "image_gen": "ImageGen",
        }
        built = {"ConversationIngress", "Router", "GraphRAG", "LLMServer", "Embeddings"}
        built |= {name for key, name in vision.items() if getattr(config.vision, key) is not None}
        built |= {"SceneDescriber"} if config.vision.detection is not None else set()
        speech = {"stt": "STT", "vad": "VAD", "diarization": "Diarization", "voice_emotion": "VoiceEmotion"}
        speech |= {"tts": "TTS"}
        audio = {"separation": "Separation", "music_analysis": "MusicAnalysis", "music_gen": "MusicGen"}
        built |= {name for key, name in speech.items() if getattr(config.speech, key) is not None}
        built |= {name for key, name in audio.items() if getattr(config.audio, key) is not None}
        assert {d.name for d in app.deployments} == built


def test_cluster_profile_asks_for_fractional_gpus_and_isolates_vllm():
    schema = runtime.load_profile("cluster")
    [app] = [app for app in schema.applications if app.name == "conversation"]
    gpus = {d.name: gpus_of(d) for d in app.deployments}
    assert any(0 < g < 1 for g in gpus.values()), gpus
    assert gpus["LLMServer"] == 2 and 0 < gpus["Embeddings"] < 1
    llm = next(d for d in app.deployments if d.name == "LLMServer")
    # tensor parallelism 2 = two whole-GPU bundles on one node, as Ray Serve LLM places vLLM
    assert AppConfig.model_validate(app.args).llm.vllm.tensor_parallel_size == 2
    assert llm.placement_group_strategy == "STRICT_PACK" and llm.ray_actor_options.num_gpus == 0
    assert any(p.startswith("vllm==") for p in llm.ray_actor_options.runtime_env["pip"]["packages"])
    assert AppConfig.model_validate(app.args).llm.backend == "vllm"


def test_local_profile_runs_on_cpu_with_packaged_models():
    schema = runtime.load_profile("local", grpc_port=19000, http_port=18000)
    assert schema.grpc_options.port == 19000 and schema.http_options.port == 18000
    [app] = [app for app in schema.applications if app.name == "conversation"]
    assert all(gpus_of(d) == 0 for d in app.deployments)
    config = AppConfig.model_validate(app.args)
    assert config.llm.backend == "transformers"
    assert Path(resolve_model_ref(config.llm.model), config.llm.gguf_file).is_file()
    assert Path(resolve_model_ref(config.embeddings.model), "config.json").is_file()


def test_unknown_profile_and_bad_config_are_clear():
    with pytest.raises(FileNotFoundError, match="choose one of"):
        runtime.profile_path("nope")
    with pytest.raises(ValueError, match="default_personality"):
        ConversationConfig(default_personality="pirate")
    with pytest.raises(ValueError, match="at least one example"):
        RouterConfig(intent_examples={"knowledge": []})
    with pytest.raises(ValueError, match="extra"):
        AppConfig.model_validate({"llm": {"modle": "typo"}})
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_model_ref("pkg://no_such_package/model")


def test_ray_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(config))  # defaults filled in as `ray up` does, then the JSON schema
    assert config["provider"]["type"] == "local" and len(config["provider"]["worker_ips"]) == 3
