#!/usr/bin/env bash
# Builds tests/io/fuzz_safetensors.cpp with clang's libFuzzer (+ ASan/UBSan) and runs it for a
# bounded time. Independent of the project's compiler: a gcc build can still run this as a ctest.
#   run_fuzz.sh BUILD_DIR [SECONDS]
# Exit 0: no finding. Exit 77: clang++ or its libFuzzer runtime is not installed (ctest: skipped).
# Anything else: a finding (the crashing input is left in BUILD_DIR, named crash-*).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS]}"
seconds="${2:-30}"
cxx="${KOFF_FUZZ_CXX:-clang++}"
mkdir -p "$out/obj" "$out/corpus" "$out/seeds"

if ! command -v "$cxx" >/dev/null; then
  echo "run_fuzz: $cxx not found; skipping (apt-get install clang)"; exit 77
fi
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' > "$out/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer "$out/probe.cpp" -o "$out/probe" 2>/dev/null; then
  echo "run_fuzz: $cxx cannot link libFuzzer; skipping (apt-get install libclang-rt-dev)"; exit 77
fi

# The reader and what it stands on: the tensor library (no ops, no BLAS) and the atomic writer.
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -I"$root")
newest_header="$(ls -t "$root"/engine/io/*.h "$root"/engine/tensor/*.h | head -1)"
objs=()
pids=()
for src in "$root"/engine/io/safetensors.cpp "$root"/engine/io/atomic_file.cpp "$root"/engine/tensor/*.cpp \
           "$root/tests/io/fuzz_safetensors.cpp"; do
  obj="$out/obj/$(basename "$src" .cpp).o"
  objs+=("$obj")
  if [[ ! -f "$obj" || "$src" -nt "$obj" || "$newest_header" -nt "$obj" ]]; then
    "$cxx" "${flags[@]}" -c "$src" -o "$obj" &
    pids+=($!)
    if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
"$cxx" -fsanitize=fuzzer,address,undefined "${objs[@]}" -lfmt -lpthread -o "$out/fuzz_safetensors"

# Seeds: small valid files (the 8-byte little-endian header length, the JSON header, the data).
seed() {  # seed NAME HEADER DATA
  local n=${#2}
  { printf "\\x$(printf %02x $((n & 255)))\\x$(printf %02x $((n >> 8)))\\0\\0\\0\\0\\0\\0"; printf '%s' "$2"; printf "$3"; } \
    > "$out/seeds/$1"
}
seed empty '{}' ''
seed f32 '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' '\0\0\200?\0\0\0@'
seed mixed '{"__metadata__":{"format":"pt"},"b":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"w":{"dtype":"BF16","shape":[2,1],"data_offsets":[8,12]},"i":{"dtype":"I32","shape":[],"data_offsets":[12,16]},"z":{"dtype":"F16","shape":[0,3],"data_offsets":[16,16]}}' \
  '\0\0\0\0\0\0\360?\200?\0@\7\0\0\0'
seed foreign '{"m":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"p":{"dtype":"F4","shape":[4],"data_offsets":[2,4]}}' 'abcd'
cat > "$out/safetensors.dict" <<'DICT'
"dtype"
"shape"
"data_offsets"
"__metadata__"
"F32"
"F64"
"F16"
"BF16"
"I32"
"I64"
"U8"
"BOOL"
"F4"
"F8_E4M3"
"18446744073709551615"
"9223372036854775807"
DICT

echo "run_fuzz: fuzzing for ${seconds}s"
cd "$out"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ./fuzz_safetensors -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 \
  -dict=safetensors.dict corpus seeds
