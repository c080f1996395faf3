#!/usr/bin/env bash
# Run HERE (the Debian 12 build machine, with network), before bench/gpu_check.sh is sent to a GPU
# machine that has nvcc, cmake, ninja, g++ and PyTorch but none of our dev packages and no network.
#
# Downloads the .deb files koff needs to configure and build its CUDA tests and benchmark into
# build-gpudeps/debs (ignored by git through /build*/, carried by the device tool: `carry:
# ["build-gpudeps"]`). gpu_check.sh unpacks them with `dpkg -x` into a private prefix, never into /.
# Google Benchmark is not needed: the GPU benchmark (bench/cuda) times with CUDA events.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=build-gpudeps/debs
rm -rf "$dest"
mkdir -p "$dest"
# fmt (headers + the .so), nlohmann-json and CLI11 (headers), GoogleTest (static libs + headers),
# OpenBLAS built on OpenMP (+ its Fortran runtime, absent from a CUDA image), libgomp for safety.
pkgs=(libfmt-dev libfmt9 nlohmann-json3-dev libcli11-dev libgtest-dev
      libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libgomp1)
(cd "$dest" && apt-get download "${pkgs[@]}")
du -sh "$dest"
ls "$dest"
