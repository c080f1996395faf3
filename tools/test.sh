#!/usr/bin/env bash
# README's test command: set up (idempotent), configure, build (the CUDA backend too when nvcc is
# found), and run every test with ctest, whose summary ends the output.
#
#   bash tools/test.sh              # release build in build/
#   bash tools/test.sh --sanitize   # ASan + UBSan build in build-sanitize/ (CPU only)
set -euo pipefail
cd "$(dirname "$0")/.."

preset=release
if [ "${1:-}" = "--sanitize" ]; then preset=sanitize; fi

bash tools/setup.sh
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
jobs=$(nproc)
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$jobs"
ctest --preset "$preset" -j "$jobs"
