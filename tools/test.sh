#!/usr/bin/env bash
# README's test command: set up (idempotent), configure, build (the CUDA backend too when nvcc is
# found), and run every test with ctest; then the skipped tests with their reasons (tools/ctest_skips.py).
# Fails when a test fails or a CPU test skipped (a GPU test may skip where there is no GPU).
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
# Quiet, but for what the configuration leaves out (e.g. the tokenizer.json parity tests without ../shared).
cmake --preset "$preset" | { grep -E '^-- Tokenizer:' || true; }
cmake --build --preset "$preset" -j "$jobs"
builddir=build
[ "$preset" = sanitize ] && builddir=build-sanitize
junit="$(pwd)/$builddir/ctest-junit.xml"
rm -f "$junit"
status=0
# The test binaries run with the CPU runtime koff itself settles on (engine/cpu/runtime.h: OpenBLAS
# kernels this CPU allows, OpenMP threads that sleep when idle, which matters under ctest -j).
eval "$("$builddir/koff" env)"
ctest --preset "$preset" -j "$jobs" --output-junit "$junit" || status=$?
# ctest counts a skipped test as passed ("100% tests passed"): name every skip, and fail when a CPU
# check did not run (GPU tests may skip: they need a GPU).
/usr/bin/python3 tools/ctest_skips.py "$junit" || { [ "$status" -ne 0 ] || status=1; }
exit "$status"
