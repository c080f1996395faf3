#!/usr/bin/env bash
# Installs everything koff needs on Debian 12, idempotently: compiler, CMake, the libraries the build
# finds (fmt, GoogleTest, Google Benchmark, OpenBLAS, nlohmann-json, CLI11), and the independent
# references the tests compare against, from PyPI, pinned, in a virtual environment outside the
# clone (${KOFF_VENV:-~/.cache/koff/venv}, about 6 GB because PyPI's torch wheel brings its CUDA
# libraries), so that every clone on a machine shares it. The CUDA toolkit is expected at
# /usr/local/cuda when wanted; without it the build simply has no CUDA backend.
#
#   bash tools/setup.sh            # safe to run again: installs only what is missing
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # build
  build-essential cmake ninja-build git pkg-config
  libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev
  # fuzzing (libFuzzer) and the Python references
  clang libclang-rt-dev python3 python3-venv python3-pip
  # tokenizer: Unicode tables, and translated text for the multilingual parity corpus (tests/tokenizer)
  unicode-data coreutils libc-l10n dpkg iso-codes gnupg-l10n tar apt libgtk-3-common
  # koff report's plots
  gnuplot-nox
  # data parallelism over MPI (engine/dist)
  openmpi-bin libopenmpi-dev
  # the English domains of the SmolLM2 experiment (tools/build_domains.py): man pages rendered by
  # groff, the King James Bible read by `bible`, Sherlock Holmes from prose's test data
  manpages groff-base bible-kjv bible-kjv-text golang-github-jdkato-prose-dev
)
PIP_PACKAGES=(
  "torch==2.15.0" "transformers==5.24.0" "tokenizers==0.23.3" "safetensors==0.8.0" "peft==0.21.2"
  "numpy==2.4.6" "gguf==0.19.0"
)
VENV=${KOFF_VENV:-$HOME/.cache/koff/venv}

log() { printf '[setup] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages: all present"
fi

# Debian's own python3, whatever else is first on PATH (pyenv, conda).
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv "$VENV"
fi
want=()
for spec in "${PIP_PACKAGES[@]}"; do
  name=${spec%%==*}
  version=${spec##*==}
  have=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  [ "$have" = "$version" ] || want+=("$spec")
done
if [ ${#want[@]} -gt 0 ]; then
  log "installing Python packages into $VENV: ${want[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${want[@]}"
else
  log "Python packages: all present"
fi
"$VENV/bin/python" -c "import torch, transformers, tokenizers, safetensors, peft, gguf" || { echo "[setup] the Python references do not import" >&2; exit 1; }

# The real pretrained model (SmolLM2-135M-Instruct, GGUF, from PyPI; never committed) and the four
# English domains built from the Debian packages above, both under the git-ignored .cache/.
KOFF_VENV="$VENV" bash tools/fetch_smollm2.sh
# llama.cpp's vocabularies (Llama 3, Qwen 2, Qwen 3.5, GPT-2) and their tokenizer test vectors, from
# PyPI's llama-cpp-python source distribution (pinned, sha256-checked), into .cache/llama_cpp_vocab/.
KOFF_VENV="$VENV" bash tools/fetch_llama_vocab.sh
/usr/bin/python3 tools/build_domains.py
log "done"
