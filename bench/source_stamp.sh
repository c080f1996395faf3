#!/usr/bin/env bash
# Prints a 16-hex-digit stamp of every file that goes into koff's binaries (C++/CUDA sources, headers,
# CMake files), the same on any machine that holds the same tree (no git needed: the GPU machine gets
# a copy of the working tree without .git). bench/gpu_prebuild.sh writes it beside the binaries it
# builds; bench/gpu_check.sh uses them only when the stamp of the tree it runs in is the same.
set -euo pipefail
cd "$(dirname "$0")/.."
find CMakeLists.txt CMakePresets.json autograd bench cuda engine tests tokenizer tools -type f \
  \( -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh' -o -name '*.cmake' \
  -o -name 'CMakeLists.txt' -o -name 'CMakePresets.json' \) -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
