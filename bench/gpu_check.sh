#!/usr/bin/env bash
# The GPU check: ONE call on a bare machine with an NVIDIA GPU (toolkit and driver, no network), under one
# global deadline well inside the device tool's 600 s, that comes back with figures even when a stage fails.
#
#   bash bench/gpu_check.sh           run every stage (on the GPU machine; from the session: the device
#                                     tool's command "bash bench/gpu_check.sh", carry ["build-gpudeps"])
#   bash bench/gpu_check.sh --plan    run nothing: print every stage, its time cap, and what this machine
#                                     has for it (works here, without a GPU)
#
# Stages, each under `timeout` capped by what is left of the budget (KOFF_GPU_BUDGET, default 540 s):
#   deps     unpack the dev packages carried from the build machine (bench/gpu_deps.sh -> build-gpudeps/debs)
#            into a private prefix with dpkg -x (never into /)
#   build    the binaries carried from the build machine (bench/gpu_prebuild.sh -> build-gpudeps/prebuilt.*)
#            when their source stamp matches this tree and they load here; otherwise configure (sm_90a +
#            compute_90 PTX, -lineinfo) and build koff_tests and koff_cuda_bench, then koff,
#            koff_offload_tests and koff_dist_tests (a failure of the second set costs no kernel figures)
#   tests    the op harness on CUDA against the CPU (f32 1e-5, bf16 1e-2) and tests/test_cuda.cpp
#   bench    kernel timings and a KOFF step on a Llama-3.2-3B-shaped model (bench/cuda/gpu_bench.cpp)
#   train    the trainer on cuda:0 against the CPU (tests/offload/test_device.cpp), NCCL on this GPU
#            (tests/dist: DistNccl) and a short `koff offload --device cuda --dtype bf16 --profile` on the
#            embedded model and corpus
#   torch    the same step in PyTorch eager (bench/cuda/torch_step.py), where torch has CUDA
#   sanitize compute-sanitizer memcheck and racecheck on the small attention and reduction cases
# The order puts the figures first: a stage that runs out of budget is skipped and says so.
# Every stage appends its status, time and figures to $OUT/summary.md as it finishes; the full logs
# (configure, build, each stage) are packed into $OUT/logs.tar.gz after every stage. $OUT holds at most
# 4 files: summary.md, logs.tar.gz, bench.json, profile.txt. The summary is printed last.
#
# Environment: KOFF_GPU_BUDGET (540), KOFF_GPU_LAYERS (28), KOFF_GPU_SEQ (2048), KOFF_GPU_JOBS (16).
set -uo pipefail
cd "$(dirname "$0")/.."
PLAN=0
case "${1:-}" in
  --plan) PLAN=1 ;;
  -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "gpu_check: unknown argument $1 (--plan, --help)" >&2; exit 2 ;;
esac

BUDGET=${KOFF_GPU_BUDGET:-540}
LAYERS=${KOFF_GPU_LAYERS:-28}
SEQ=${KOFF_GPU_SEQ:-2048}
JOBS=${KOFF_GPU_JOBS:-16}
OUT=${OUT:-/tmp/koff-gpu-check}
B=build-gpu
P=/tmp/koff-deps
LIBDIR=$P/usr/lib/x86_64-linux-gnu
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET))
RESERVE=15  # seconds kept for packing the logs and printing the summary

# name|cap in seconds|what it does
STAGES=(
  "deps|30|unpack build-gpudeps/debs into $P (dpkg -x)"
  "build|300|use build-gpudeps/prebuilt.tar.xz if its stamp matches; else configure $B (sm_90a + compute_90, -lineinfo), build koff_tests koff_cuda_bench, then koff koff_offload_tests koff_dist_tests (-j$JOBS)"
  "tests|90|koff_tests --gtest_filter='*Cuda*:*BackendsMatchCpu*' (every op on CUDA vs CPU; model-shaped kernels)"
  "bench|150|koff_cuda_bench --layers $LAYERS --seq $SEQ (kernels vs measured ceilings, KOFF step tokens/s, MFU)"
  "train|100|koff_offload_tests DeviceTraining*:Profile*; koff_dist_tests DistNccl*; koff offload --device cuda --dtype bf16 --profile (20 steps)"
  "torch|90|bench/cuda/torch_step.py --layers $LAYERS --seq $SEQ (PyTorch eager peer, its attention backend named)"
  "sanitize|60|compute-sanitizer memcheck + racecheck on the small attention and reduction cases"
)

# ---- what this machine has -----------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
found_gpu() { nvidia-smi -L 2>/dev/null | head -1 || echo "none (no nvidia-smi or no device)"; }
found_nvcc() { [ -x "$NVCC" ] && "$NVCC" --version | tail -1 | sed 's/^Build //' || echo "MISSING"; }
found_tool() { have "$1" && echo "$(command -v "$1") ($("$1" --version 2>&1 | head -1))" || echo "MISSING"; }
found_torch() {
  python3 -c 'import torch; print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")' 2>/dev/null ||
    echo "no torch"
}
found_nccl() {
  local f
  for f in "$(dirname "$(dirname "$NVCC")")"/lib64/libnccl.so* /usr/lib/x86_64-linux-gnu/libnccl.so* \
           /usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so* \
           /opt/torch/.venv/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so* \
           "$HOME"/.cache/koff/venv/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so*; do
    [ -e "$f" ] && { echo "$f"; return; }
  done
  echo "none (koff builds without the NCCL communicator)"
}
found_debs() {
  local n
  n=$(ls build-gpudeps/debs/*.deb 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] && echo "build-gpudeps/debs: $n packages" || echo "MISSING: run bench/gpu_deps.sh here and carry build-gpudeps"
}
found_prebuilt() {
  [ -f build-gpudeps/prebuilt.tar.xz ] || { echo "none (bench/gpu_prebuild.sh makes them): built here"; return; }
  local want have
  want=$(cat build-gpudeps/prebuilt.stamp 2>/dev/null || echo none)
  have=$(bash bench/source_stamp.sh)
  [ "$want" = "$have" ] && echo "build-gpudeps/prebuilt.tar.xz, stamp $want = this tree's: used if they load" ||
    echo "build-gpudeps/prebuilt.tar.xz of other sources (stamp $want, this tree $have): built here"
}
found_sanitizer() {
  local cs
  cs=$(command -v compute-sanitizer || ls "$(dirname "$NVCC")"/compute-sanitizer 2>/dev/null || true)
  [ -n "$cs" ] && echo "$cs" || echo "MISSING (the sanitize stage is skipped)"
}
inventory() {
  echo "GPU:               $(found_gpu)"
  echo "nvcc:              $NVCC ($(found_nvcc))"
  echo "cmake:             $(found_tool cmake)"
  echo "ninja:             $(found_tool ninja)"
  echo "g++:               $(found_tool g++)"
  echo "python3:           $(found_tool python3); $(found_torch)"
  echo "compute-sanitizer: $(found_sanitizer)"
  echo "NCCL:              $(found_nccl)"
  echo "dev packages:      $(found_debs)"
  echo "prebuilt binaries: $(found_prebuilt)"
}

if [ "$PLAN" -eq 1 ]; then
  echo "koff GPU check: the plan (nothing is run). Budget $BUDGET s (KOFF_GPU_BUDGET), $RESERVE s of it kept for"
  echo "the summary; output in \$OUT (now $OUT): summary.md, logs.tar.gz, bench.json, profile.txt (4 files)."
  echo
  echo "What this machine has:"
  inventory | sed 's/^/  /'
  echo
  echo "Stages, in order (a stage gets min(its cap, what is left of the budget); caps add up to"
  total=0
  for s in "${STAGES[@]}"; do total=$((total + $(cut -d'|' -f2 <<<"$s"))); done
  echo "$total s, so the last stages run short or are skipped when the first ones use their whole cap):"
  i=1
  for s in "${STAGES[@]}"; do
    IFS='|' read -r name cap what <<<"$s"
    printf '  %d. %-9s cap %3d s  %s\n' "$i" "$name" "$cap" "$what"
    i=$((i + 1))
  done
  exit 0
fi

# ---- running --------------------------------------------------------------------------------------
mkdir -p "$OUT"
rm -f "$OUT/summary.md" "$OUT/logs.tar.gz" "$OUT/bench.json" "$OUT/profile.txt"
LOGS=$(mktemp -d /tmp/koff-gpu-logs.XXXXXX)
SUMMARY=$OUT/summary.md
now() { date +%s; }
say() { echo "== [$(($(now) - T0)) s] $*"; }
pack_logs() { tar -czf "$OUT/logs.tar.gz.tmp" -C "$LOGS" . 2>/dev/null && mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"; }
note() { echo "$*" >>"$SUMMARY"; }

declare -A STATUS DETAIL
SKIP=""
# run_stage NAME: runs stage_NAME under min(cap, budget left); appends its status, time and figures
# (DETAIL[NAME], set by the stage) to the summary at once.
run_stage() {
  local name=$1 cap=0 s left t rc
  for s in "${STAGES[@]}"; do [ "$(cut -d'|' -f1 <<<"$s")" = "$name" ] && cap=$(cut -d'|' -f2 <<<"$s"); done
  left=$((DEADLINE - RESERVE - $(now)))
  if [ "$left" -lt 10 ]; then
    STATUS[$name]="skipped: out of time"
    note "| $name | ${STATUS[$name]} | 0 s | |"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  say "stage $name (up to $cap s)"
  t=$(now)
  SKIP=""
  STAGE_CAP=$cap "stage_$name" >"$LOGS/$name.log" 2>&1
  rc=$?
  if [ -n "$SKIP" ]; then
    STATUS[$name]=$SKIP
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    STATUS[$name]="TIMED OUT (cap $cap s)"
  elif [ -z "${STATUS[$name]:-}" ]; then
    [ "$rc" -eq 0 ] && STATUS[$name]=ok || STATUS[$name]="FAILED (exit $rc)"
  fi
  note "| $name | ${STATUS[$name]} | $(($(now) - t)) s | ${DETAIL[$name]:-} |"
  tail -n 15 "$LOGS/$name.log"
  pack_logs
}
# run_for SECONDS CMD...: a command under the stage's cap (or less).
run_for() {
  local cap=$1
  shift
  [ "$cap" -gt "$STAGE_CAP" ] && cap=$STAGE_CAP
  timeout --kill-after=5 "$cap" "$@"
}
needs() {  # needs STAGE...: skips the current stage unless each of these passed
  local s
  for s in "$@"; do
    if [[ "${STATUS[$s]:-}" != ok* ]]; then
      SKIP="skipped: $s did not pass"
      echo "$SKIP (${STATUS[$s]:-not run})"
      return 1
    fi
  done
}

stage_deps() {
  if ! ls build-gpudeps/debs/*.deb >/dev/null 2>&1; then
    echo "no build-gpudeps/debs: run bench/gpu_deps.sh on the build machine and carry build-gpudeps"
    return 1
  fi
  rm -rf "$P" && mkdir -p "$P"
  local f
  for f in build-gpudeps/debs/*.deb; do dpkg -x "$f" "$P" || return 1; done
  # The machine's own OpenMP runtime (from its g++) wins over Debian's older copy.
  if ldconfig -p | grep -q 'libgomp.so.1 '; then rm -f "$LIBDIR"/libgomp.so.1*; fi
  ls "$P/usr/lib/x86_64-linux-gnu" | head -40
}

PREBUILT=(koff tests/koff_tests tests/offload/koff_offload_tests tests/dist/koff_dist_tests bench/cuda/koff_cuda_bench)
# The binaries of bench/gpu_prebuild.sh, when they are of this tree and load here; else returns 1.
use_prebuilt() {
  [ -f build-gpudeps/prebuilt.tar.xz ] || { echo "no prebuilt binaries"; return 1; }
  local want have b
  want=$(cat build-gpudeps/prebuilt.stamp 2>/dev/null || echo none)
  have=$(bash bench/source_stamp.sh)
  [ "$want" = "$have" ] || { echo "prebuilt binaries are of other sources ($want, this tree $have)"; return 1; }
  # They were built from /tmp/koff-src (paths to the model, the data and test work directories inside).
  ln -sfn "$PWD" /tmp/koff-src || return 1
  rm -rf $B && mkdir -p $B && tar -C $B -xJf build-gpudeps/prebuilt.tar.xz || return 1
  for b in "${PREBUILT[@]}"; do
    if ldd "$B/$b" | grep -q "not found"; then
      echo "prebuilt $b does not load here:"; ldd "$B/$b" | grep "not found"
      rm -rf $B; return 1
    fi
  done
  $B/koff --version || { echo "prebuilt koff does not run here"; rm -rf $B; return 1; }
  echo "using the prebuilt binaries (stamp $want)"
}

stage_build() {
  needs deps || return 1
  if use_prebuilt; then
    STATUS[build]="ok (prebuilt, stamp $(cat build-gpudeps/prebuilt.stamp))"
    return 0
  fi
  run_for 60 cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" -DKOFF_CUDA=ON \
    -DKOFF_BENCH=OFF -DKOFF_TESTS=ON -DCMAKE_PREFIX_PATH="$P/usr" -DCMAKE_CUDA_FLAGS=-lineinfo \
    -DKOFF_OPENBLAS_OPENMP="$LIBDIR/openblas-openmp/libopenblas.so" \
    -DKOFF_CBLAS_INCLUDE="$P/usr/include/x86_64-linux-gnu/openblas-openmp" || return 1
  local left=$((STAGE_CAP - 60))
  run_for "$left" cmake --build $B -j"$JOBS" --target koff_tests koff_cuda_bench || return 1
  [ -x $B/tests/koff_tests ] && [ -x $B/bench/cuda/koff_cuda_bench ] || return 1
  # The training path's binaries separately: their failure must not cost the kernel tests and timings.
  if ! run_for "$left" cmake --build $B -j"$JOBS" --target koff koff_offload_tests koff_dist_tests; then
    STATUS[build]="ok (kernels); training path binaries FAILED"
  fi
}

stage_tests() {
  needs build || return 1
  run_for 90 $B/tests/koff_tests --gtest_filter='*Cuda*:*BackendsMatchCpu*' --gtest_brief=1 \
    --gtest_output=xml:"$LOGS/cuda_tests.xml"
  local rc=$?
  DETAIL[tests]=$(grep -o 'tests="[0-9]*" failures="[0-9]*" disabled="[0-9]*" skipped="[0-9]*"' \
    "$LOGS/cuda_tests.xml" 2>/dev/null | head -1 | tr -d '"')
  return $rc
}

stage_sanitize() {
  needs build || return 1
  local cs
  cs=$(command -v compute-sanitizer || ls "$(dirname "$NVCC")"/compute-sanitizer 2>/dev/null || true)
  if [ -z "$cs" ]; then
    SKIP="skipped: no compute-sanitizer"
    return 0
  fi
  local filter='*BackendsMatchCpu/attention*:*BackendsMatchCpu/sum*:*BackendsMatchCpu/rmsnorm*:*BackendsMatchCpu/cross_entropy*'
  local rc=0
  run_for 30 "$cs" --tool memcheck --error-exitcode 3 $B/tests/koff_tests --gtest_filter="$filter" --gtest_brief=1 || rc=1
  run_for 30 "$cs" --tool racecheck --error-exitcode 3 $B/tests/koff_tests --gtest_filter="$filter" --gtest_brief=1 || rc=1
  return $rc
}

stage_train() {
  needs build || return 1
  [ -x $B/koff ] && [ -x $B/tests/offload/koff_offload_tests ] || { echo "training path binaries not built"; return 1; }
  local rc=0
  run_for 40 $B/tests/offload/koff_offload_tests --gtest_filter='DeviceTraining*:Profile*' --gtest_brief=1 \
    --gtest_output=xml:"$LOGS/train_tests.xml" || rc=1
  [ -x $B/tests/dist/koff_dist_tests ] && { run_for 30 $B/tests/dist/koff_dist_tests --gtest_filter='DistNccl*' || rc=1; }
  run_for 60 $B/koff offload --model models/embedded --data data/corpus --target 0.12 --steps 20 --batch 8 \
    --seq 64 --eval-tokens 1024 --device cuda --dtype bf16 --profile --out /tmp/koff-offload-gpu || rc=1
  if [ -f /tmp/koff-offload-gpu/profile.txt ]; then
    cp /tmp/koff-offload-gpu/profile.txt "$OUT/profile.txt"
    DETAIL[train]="koff offload --profile: $(head -1 /tmp/koff-offload-gpu/profile.txt)"
  fi
  return $rc
}

stage_bench() {
  needs build || return 1
  if run_for 150 $B/bench/cuda/koff_cuda_bench --layers "$LAYERS" --seq "$SEQ" --steps 3 --json "$OUT/bench.json"; then
    DETAIL[bench]=$(grep -m1 -i "tokens/s" "$LOGS/bench.log" | tr -s ' ' | cut -c1-160)
    return 0
  fi
  echo "retrying the step alone with 4 layers"
  LAYERS=4
  run_for 90 $B/bench/cuda/koff_cuda_bench --layers 4 --seq "$SEQ" --steps 3 --no-kernels --json "$OUT/bench.json" &&
    STATUS[bench]="ok (4 layers only)"
}

stage_torch() {
  if ! python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    SKIP="skipped: no PyTorch with CUDA"
    return 0
  fi
  PYTHONUNBUFFERED=1 run_for 90 python3 bench/cuda/torch_step.py --layers "$LAYERS" --seq "$SEQ" --steps 3
}

{
  echo "# koff GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), budget $BUDGET s)"
  echo
  inventory | sed 's/^/    /'
  echo
  echo "| stage | status | time | figures |"
  echo "|---|---|---|---|"
} >"$SUMMARY"
# The carried dev packages' libraries, the toolkit's, and NCCL's wherever found (a wheel's included).
NCCL_LIB=$(found_nccl)
NCCL_DIR=
[ -e "$NCCL_LIB" ] && NCCL_DIR=$(dirname "$NCCL_LIB")
export LD_LIBRARY_PATH=$LIBDIR:$LIBDIR/openblas-openmp:$(dirname "$(dirname "$NVCC")")/lib64${NCCL_DIR:+:$NCCL_DIR}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-16}
for s in "${STAGES[@]}"; do run_stage "$(cut -d'|' -f1 <<<"$s")"; done

# The figures, from what the stages left (each part is optional: a failed stage leaves its part out).
python3 - "$OUT" "$LOGS" >>"$SUMMARY" 2>>"$LOGS/summary_errors.log" <<'PY'
import json, os, re, sys
out, logs = sys.argv[1:3]
try:
    b = json.load(open(os.path.join(out, "bench.json")))
except Exception:
    b = None
if b:
    print("\n| kernel | ms | rate | of ceiling |\n|---|---|---|---|")
    for r in b["rows"]:
        print(f"| {r['name']} | {r['ms']:.3f} | {r['value']:.1f} {r['metric']} | {100 * r['fraction']:.1f}% |")
t = None
try:
    text = open(os.path.join(logs, "torch.log")).read()
    m = re.search(r"TORCH_STEP .*ms=([\d.]+) tokens_per_s=(\d+)", text)
    t = (float(m.group(1)), float(m.group(2))) if m else None
    for line in text.splitlines():
        if "attention backend" in line.lower():
            print(f"\nPyTorch: {line.strip()}")
except Exception:
    pass
if b and b.get("tokens_per_s"):
    line = (f"\nKOFF step ({b['layers']} layers, seq {b['seq']}): {b['step_ms']:.1f} ms, {b['tokens_per_s']:.0f} "
            f"tokens/s, MFU {100 * b['mfu_datasheet']:.1f}% of 990 TFLOP/s")
    if t:
        line += f"; PyTorch eager {t[0]:.1f} ms, {t[1]:.0f} tokens/s; KOFF/PyTorch speed = {b['tokens_per_s'] / t[1]:.2f}x"
    print(line)
try:
    for l in open(os.path.join(out, "profile.txt")).read().splitlines():
        if "MFU" in l or "bandwidth" in l:
            print(l)
except Exception:
    pass
PY
pack_logs
say "done; summary ($SUMMARY):"
cat "$SUMMARY"
