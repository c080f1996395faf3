#!/usr/bin/env bash
# The GPU check, in ONE call on a machine with an NVIDIA GPU (sized for an H200, under 8 minutes):
#   1. unpacks the dev packages carried from the build machine (bench/gpu_deps.sh -> build-gpudeps/debs)
#      into a private prefix with dpkg -x (never into /), and configures against it;
#   2. builds koff_tests, koff_offload_tests, koff and koff_cuda_bench (-j16; sm_90a + compute_90 PTX);
#   3. runs the CUDA tests: every op of the harness on CUDA against the CPU backend in f32 and bf16,
#      and the model-shaped kernel checks of tests/test_cuda.cpp; then the GPU training path: the
#      trainer on the GPU against the CPU (tests/offload/test_device.cpp) and a short
#      `koff offload --device cuda --dtype bf16 --profile` on the embedded model and corpus;
#   4. times each kernel family (GB/s or TFLOP/s, fraction of the ceilings measured in the same run)
#      and a KOFF training step on a Llama-3.2-3B-shaped model (tokens/s, MFU): bench/cuda/gpu_bench.cpp;
#   5. times the same step in PyTorch eager (bench/cuda/torch_step.py) where torch is installed;
#   6. prints a short table last. Everything lands in $OUT when set (the device tool's folder).
#
# From the session (device tool): run command "bash bench/gpu_check.sh", carry ["build-gpudeps"].
# Environment: KOFF_GPU_LAYERS (default 28), KOFF_GPU_SEQ (2048), KOFF_GPU_JOBS (16).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/koff-gpu-check}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
exec > >(tee "$LOG") 2>&1
T0=$(date +%s)
LAYERS=${KOFF_GPU_LAYERS:-28}
SEQ=${KOFF_GPU_SEQ:-2048}
JOBS=${KOFF_GPU_JOBS:-16}
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }
status_build=skipped status_build_train=skipped status_tests=skipped status_train=skipped status_bench=skipped status_torch=skipped

stamp "machine"
nvidia-smi -L || true
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$NVCC" --version | tail -2 || true
for t in g++ cmake ninja dpkg python3; do printf '%-8s %s\n' "$t" "$(command -v $t || echo MISSING)"; done

stamp "dependencies from build-gpudeps/debs into a private prefix"
P=/tmp/koff-deps
if ls build-gpudeps/debs/*.deb >/dev/null 2>&1; then
  rm -rf "$P" && mkdir -p "$P"
  for f in build-gpudeps/debs/*.deb; do dpkg -x "$f" "$P"; done
  # The machine's own OpenMP runtime (from its g++) wins over Debian's older copy.
  if ldconfig -p | grep -q 'libgomp.so.1 '; then rm -f "$P"/usr/lib/x86_64-linux-gnu/libgomp.so.1*; fi
else
  echo "no build-gpudeps/debs: run bench/gpu_deps.sh on the build machine and carry build-gpudeps"
fi
LIBDIR=$P/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$LIBDIR:$LIBDIR/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-16}

stamp "configure + build (koff_tests, koff_cuda_bench; then koff, koff_offload_tests)"
B=build-gpu
if cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" -DKOFF_CUDA=ON \
     -DKOFF_BENCH=OFF -DKOFF_TESTS=ON -DCMAKE_PREFIX_PATH="$P/usr" \
     -DKOFF_OPENBLAS_OPENMP="$LIBDIR/openblas-openmp/libopenblas.so" \
     -DKOFF_CBLAS_INCLUDE="$P/usr/include/x86_64-linux-gnu/openblas-openmp" >"$OUT/configure.log" 2>&1 &&
   cmake --build $B -j"$JOBS" --target koff_tests koff_cuda_bench 2>&1 | tail -5; then
  [ -x $B/tests/koff_tests ] && [ -x $B/bench/cuda/koff_cuda_bench ] && status_build=ok || status_build=FAILED
  # The training path's binaries separately: a failure there must not cost the kernel tests and timings.
  cmake --build $B -j"$JOBS" --target koff koff_offload_tests 2>&1 | tail -5
  [ -x $B/koff ] && [ -x $B/tests/offload/koff_offload_tests ] && status_build_train=ok || status_build_train=FAILED
else
  status_build=FAILED
  tail -30 "$OUT/configure.log"
fi
stamp "build: $status_build (training path binaries: $status_build_train)"

if [ "$status_build" = ok ]; then
  stamp "CUDA tests: the op harness on CUDA vs CPU (f32 1e-5, bf16 1e-2) + model-shaped kernel checks"
  if timeout 240 $B/tests/koff_tests --gtest_filter='*Cuda*:*BackendsMatchCpu*' --gtest_brief=1 \
       --gtest_output=xml:"$OUT/cuda_tests.xml"; then status_tests=passed; else status_tests=FAILED; fi
  grep -E '^\[  (PASSED|FAILED|SKIPPED) ' -A0 "$LOG" | tail -3 || true
  stamp "tests: $status_tests"

  stamp "GPU training path: the trainer on cuda:0 vs the CPU, then koff offload --device cuda --dtype bf16 --profile"
  if [ "$status_build_train" = ok ]; then
    status_train=passed
    timeout 120 $B/tests/offload/koff_offload_tests --gtest_filter='DeviceTraining*:Profile*' --gtest_brief=1 \
      --gtest_output=xml:"$OUT/train_tests.xml" || status_train=FAILED
    timeout 150 $B/koff offload --model models/embedded --data data/corpus --target 0.12 --steps 20 --batch 8 \
      --seq 64 --eval-tokens 1024 --device cuda --dtype bf16 --profile --out "$OUT/offload-gpu" || status_train=FAILED
  else
    status_train="not built"
  fi
  rm -rf "$OUT/offload-gpu/ckpt" "$OUT/offload-gpu/backbone" "$OUT/offload-gpu/memories"  # keep the small files
  stamp "training path: $status_train"

  stamp "kernel timings + KOFF step ($LAYERS layers, seq $SEQ)"
  if timeout 200 $B/bench/cuda/koff_cuda_bench --layers "$LAYERS" --seq "$SEQ" --steps 3 --json "$OUT/bench.json"; then
    status_bench=ok
  else
    status_bench="FAILED (exit $?)"
    stamp "retrying the step alone with 4 layers"
    LAYERS=4
    timeout 90 $B/bench/cuda/koff_cuda_bench --layers 4 --seq "$SEQ" --steps 3 --no-kernels --json "$OUT/bench.json" &&
      status_bench="ok (4 layers only)"
  fi
  stamp "bench: $status_bench"
fi

stamp "PyTorch eager peer ($LAYERS layers, seq $SEQ)"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  if PYTHONUNBUFFERED=1 timeout 150 python3 bench/cuda/torch_step.py --layers "$LAYERS" --seq "$SEQ" --steps 3 \
       | tee "$OUT/torch.log"; then status_torch=ok; else status_torch=FAILED; fi
else
  echo "no PyTorch with CUDA here"
fi

stamp "summary"
python3 - "$OUT" "$status_build" "$status_tests" "$status_bench" "$status_torch" "$status_train" <<'PY' | tee "$OUT/summary.md"
import json, os, re, sys
out, sb, st, sbe, sto, str_ = sys.argv[1:7]
print(f"| check | result |\n|---|---|\n| build (sm_90a + PTX) | {sb} |\n| CUDA tests | {st} |\n"
      f"| GPU training path | {str_} |\n| bench | {sbe} |\n| torch | {sto} |\n")
try:
    b = json.load(open(os.path.join(out, "bench.json")))
except Exception:
    b = None
if b:
    print("| kernel | ms | rate | of ceiling |\n|---|---|---|---|")
    for r in b["rows"]:
        print(f"| {r['name']} | {r['ms']:.3f} | {r['value']:.1f} {r['metric']} | {100 * r['fraction']:.1f}% |")
    print()
t = None
try:
    m = re.search(r"TORCH_STEP .*ms=([\d.]+) tokens_per_s=(\d+)", open(os.path.join(out, "torch.log")).read())
    t = (float(m.group(1)), float(m.group(2))) if m else None
except Exception:
    pass
if b and b.get("tokens_per_s"):
    line = (f"KOFF step ({b['layers']} layers, seq {b['seq']}): {b['step_ms']:.1f} ms, {b['tokens_per_s']:.0f} tokens/s, "
            f"MFU {100 * b['mfu_datasheet']:.1f}% of 990 TFLOP/s")
    if t:
        line += f"; PyTorch eager {t[0]:.1f} ms, {t[1]:.0f} tokens/s; KOFF/PyTorch speed = {b['tokens_per_s'] / t[1]:.2f}x"
    print(line)
try:
    prof = open(os.path.join(out, "offload-gpu", "profile.txt")).read().splitlines()
    print("\nkoff offload --profile, embedded model on cuda bf16: " + prof[0])
    for l in prof:
        if "MFU" in l or "bandwidth" in l:
            print(l)
except Exception:
    pass
PY
stamp "done"
