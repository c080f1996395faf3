#!/usr/bin/env bash
# README's first command: set up (idempotent), build the koff executable, and run `koff demo` on the
# embedded model and corpus. Arguments go to `koff demo` (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target koff
exec ./build/koff demo "$@"
