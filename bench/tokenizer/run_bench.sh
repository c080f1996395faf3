#!/usr/bin/env bash
# koff vs Hugging Face `tokenizers` encode throughput, side by side, on the tokenizer test corpus.
#   run_bench.sh BENCH_BINARY TESTDATA_DIR [PYTHON] [THREADS...]
# TESTDATA_DIR is the tokenizer tests' fixture output (corpus.jsonl, manifest.json), e.g.
# build/tests/tokenizer/testdata after `ctest -R tokenizer_reference`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:?usage: run_bench.sh BENCH_BINARY TESTDATA_DIR [PYTHON] [THREADS...]}"
data="${2:?usage}"
python="${3:-$here/../../.cache/venv/bin/python}"
shift $(( $# >= 3 ? 3 : $# ))
threads=("${@:-1}")
[[ ${#threads[@]} -eq 0 ]] && threads=(1 2)
names=$("$python" -c "import json,sys; m=json.load(open(sys.argv[1])); print(' '.join(f'{k}={v}' for k,v in m['tokenizers'].items() if k in ('llama3','qwen3','gpt2','mistral')))" "$data/manifest.json")
for entry in $names; do
  name="${entry%%=*}"; file="${entry#*=}"
  for t in "${threads[@]}"; do
    for mode in batch single; do
      k=$("$bin" --tokenizer "$file" --corpus "$data/corpus.jsonl" --threads "$t" --mode "$mode")
      h=$("$python" "$here/bench_hf.py" --tokenizer "$file" --corpus "$data/corpus.jsonl" --threads "$t" --mode "$mode")
      printf '%-8s %-6s threads=%s  koff %8s MB/s   hf %8s MB/s\n' "$name" "$mode" "$t" \
        "$(sed -E 's/.*: ([0-9.]+) MB\/s.*/\1/' <<<"$k")" "$(sed -E 's/.*: ([0-9.]+) MB\/s.*/\1/' <<<"$h")"
    done
  done
done
