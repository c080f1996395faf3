#!/usr/bin/env bash
# Run HERE (the build machine: nvcc, no GPU), after bench/gpu_deps.sh and before sending
# bench/gpu_check.sh to a GPU machine: builds the check's binaries for sm_90a (+ compute_90 PTX,
# -lineinfo) so that a compile problem on the GPU machine costs no figures and the check's time goes to
# measuring. Writes into build-gpudeps/ (carried with `carry: ["build-gpudeps"]`):
#   prebuilt.tar.xz   koff, koff_tests, koff_offload_tests, koff_dist_tests, koff_cuda_bench
#   prebuilt.stamp    bench/source_stamp.sh of the tree they were built from
# gpu_check.sh uses them when the stamp matches the tree it runs in and every library they need
# resolves there (ldd) and `koff --version` runs; otherwise it builds there as before.
#
# The binaries hold absolute paths (the source tree for the embedded model and test data, the build
# tree for test work directories), so they are built from the path /tmp/koff-src, a link to this
# tree, into /tmp/koff-src/build-gpu; gpu_check.sh makes the same link on the GPU machine. MPI is
# left out (the GPU machine has no OpenMPI; one GPU needs none); NCCL is linked when found here and
# resolved there from the CUDA toolkit or the PyTorch wheel's nvidia/nccl.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
link=/tmp/koff-src
B=build-gpu
JOBS=${KOFF_JOBS:-$(nproc)}
ln -sfn "$repo" "$link"
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
mkdir -p build-gpudeps
cmake -S "$link" -B "$link/$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" -DKOFF_CUDA=ON \
  -DKOFF_BENCH=OFF -DKOFF_TESTS=ON -DKOFF_MPI=OFF -DCMAKE_CUDA_FLAGS=-lineinfo >/dev/null
bins=(koff tests/koff_tests tests/offload/koff_offload_tests tests/dist/koff_dist_tests bench/cuda/koff_cuda_bench)
stamp=$(bash bench/source_stamp.sh)
time cmake --build "$link/$B" -j"$JOBS" --target koff koff_tests koff_offload_tests koff_dist_tests koff_cuda_bench
[ "$(bash bench/source_stamp.sh)" = "$stamp" ] || { echo "gpu_prebuild: the sources changed during the build; run it again" >&2; exit 1; }
tar -C "$B" -cJf build-gpudeps/prebuilt.tar.xz.tmp "${bins[@]}"
mv build-gpudeps/prebuilt.tar.xz.tmp build-gpudeps/prebuilt.tar.xz
echo "$stamp" >build-gpudeps/prebuilt.stamp
ls -la build-gpudeps/prebuilt.tar.xz
echo "gpu_prebuild: stamp $stamp; build-gpudeps holds $(du -sh build-gpudeps | cut -f1) (the device tool carries at most 64 MiB with the tree)"
