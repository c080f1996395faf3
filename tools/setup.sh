#!/usr/bin/env bash
# Installs everything koff needs on Debian 12, idempotently: compiler, CMake, the libraries the build
# finds (fmt, GoogleTest, Google Benchmark, OpenBLAS, nlohmann-json, CLI11), and the Python
# references the tests compare against (PyTorch from Debian; HF tokenizers from PyPI in a venv under
# the git-ignored .cache/). The CUDA toolkit is expected at /usr/local/cuda when wanted; without it
# the build simply has no CUDA backend.
#
#   bash tools/setup.sh            # safe to run again: installs only what is missing
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build git pkg-config clang
  libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev nlohmann-json3-dev libcli11-dev
  python3 python3-venv python3-pip python3-numpy python3-torch
  unicode-data
)
PIP_PACKAGES=(
  "tokenizers==0.23.3"
)
VENV=.cache/venv

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

# Debian's own python3 (not a pyenv or conda one), so the venv sees Debian's torch and numpy.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
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
"$VENV/bin/python" -c "import torch, tokenizers" || { echo "[setup] the Python references do not import" >&2; exit 1; }
log "done"
