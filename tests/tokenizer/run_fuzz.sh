#!/usr/bin/env bash
# Builds tests/tokenizer/fuzz_tokenizer.cpp with clang's libFuzzer (+ ASan/UBSan) and runs it for a
# bounded time. Independent of the project's compiler: a gcc build can still run this as a ctest.
#   run_fuzz.sh BUILD_DIR [SECONDS]
# Exit 0: no finding. Exit 77: clang++ or its libFuzzer runtime is not installed (ctest: skipped).
# Anything else: a finding (the crashing input is left in BUILD_DIR, named crash-*).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS]}"
seconds="${2:-45}"
cxx="${KOFF_FUZZ_CXX:-clang++}"
mkdir -p "$out/obj" "$out/corpus" "$out/seeds"

if ! command -v "$cxx" >/dev/null; then
  echo "run_fuzz: $cxx not found; skipping (apt-get install clang)"; exit 77
fi
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' > "$out/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer "$out/probe.cpp" -o "$out/probe" 2>/dev/null; then
  echo "run_fuzz: $cxx cannot link libFuzzer; skipping (apt-get install libclang-rt-dev)"; exit 77
fi

flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -I"$root")
objs=()
pids=()
for src in "$root"/tokenizer/*.cpp "$root/tests/tokenizer/fuzz_tokenizer.cpp"; do
  obj="$out/obj/$(basename "$src" .cpp).o"
  objs+=("$obj")
  if [[ ! -f "$obj" || "$src" -nt "$obj" || "$(ls -t "$root"/tokenizer/*.h | head -1)" -nt "$obj" ]]; then
    "$cxx" "${flags[@]}" -c "$src" -o "$obj" &
    pids+=($!)
    if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
"$cxx" -fsanitize=fuzzer,address,undefined "${objs[@]}" -lfmt -lpthread -o "$out/fuzz_tokenizer"

# Seeds: a small byte-level tokenizer.json (mode 0) and some text (modes 1 and 2).
{
  printf '\x00'
  cat <<'JSON'
{"version": "1.0", "added_tokens": [{"id": 5, "content": "<s>", "special": true, "normalized": false, "lstrip": true, "rstrip": true}],
 "normalizer": {"type": "NFC"},
 "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
   {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
   {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]},
 "post_processor": {"type": "ByteLevel"},
 "decoder": {"type": "ByteLevel"},
 "model": {"type": "BPE", "ignore_merges": true, "vocab": {"H": 0, "e": 1, "l": 2, "He": 3, "ll": 4, "<s>": 5}, "merges": [["H", "e"], "l l"]}}
JSON
} > "$out/seeds/json_bytelevel"
printf '\x01Hello, wörld! 12345 it'"'"'s\n\n  \t中文 😀 <|bos|>' > "$out/seeds/text_bytelevel"
printf '\x02 ab a é x<s>\n' > "$out/seeds/text_sentencepiece"

echo "run_fuzz: fuzzing for ${seconds}s"
cd "$out"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ./fuzz_tokenizer -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 \
  corpus seeds
