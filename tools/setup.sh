#!/usr/bin/env bash
# Create .venv and install btc_rl with its dev and docs tools. Safe to run again (it keeps what is installed).
#
# PyTorch: an existing torch in the venv is kept. Otherwise
#   - TORCH_SPEC set (e.g. "torch==2.13.0"): `pip install $TORCH_SPEC` as given (GPU users: your CUDA build);
#   - an NVIDIA GPU visible (nvidia-smi): `pip install torch` from PyPI, which is a CUDA build on Linux;
#   - no GPU: a CPU build — a local torch wheel if pip's find-links has one, else PyTorch's CPU wheel index,
#     so a CPU machine never downloads the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    echo "setup: installing $TORCH_SPEC"; "${PIP[@]}" install "$TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing torch (CUDA build) from PyPI"; "${PIP[@]}" install torch
  elif wheel_dir=$(mktemp -d) && "${PIP[@]}" download --no-deps --no-index -d "$wheel_dir" "torch==$TORCH_VERSION" >/dev/null 2>&1; then
    echo "setup: installing the local wheel $(ls "$wheel_dir")"    # its dependencies come from the usual index
    "${PIP[@]}" install "$wheel_dir"/torch-*.whl
  else
    echo "setup: no GPU: installing the CPU build of torch==$TORCH_VERSION"
    "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url "$CPU_INDEX"
  fi
fi
"${PIP[@]}" install -e ".[dev,docs]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import torch, btc_rl; print(f'setup: btc_rl {btc_rl.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"
