#!/usr/bin/env bash
# End-to-end CLI test: a tiny model pretrained from scratch, offloaded, evaluated with a memory,
# generated from; then bad input, which must give ONE line on stderr, exit status 2, and write nothing.
#   test_cli.sh KOFF_BINARY SOURCE_DIR WORK_DIR
set -u
koff=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
failures=0 passed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Two small domains cut from the corpus.
for lang in en de; do
  mkdir -p "$work/data/$lang"
  head -n 400 "$src/data/corpus/$lang/train.txt" > "$work/data/$lang/train.txt"
  head -n 60 "$src/data/corpus/$lang/valid.txt" > "$work/data/$lang/valid.txt"
done
cat > "$work/tiny.json" <<'JSON'
{"tokenizer": {"vocab_size": 400},
 "model": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": true},
 "train": {"steps": 6, "batch": 4, "seq": 32, "warmup": 2, "log_every": 2, "checkpoint_every": 3,
           "eval_every": 0, "eval_windows": 2}}
JSON

run() {  # run NAME EXPECTED_STATUS CMD...: checks the status
  local name=$1 want=$2; shift 2
  "$@" > "$work/$name.out" 2> "$work/$name.err"
  local got=$?
  if [ "$got" -eq "$want" ]; then ok; else bad "$name: exit $got, wanted $want: $(tail -n 3 "$work/$name.err")"; fi
}
one_error_line() {  # the error is one line naming the thing at fault
  local name=$1 pattern=$2
  local lines; lines=$(grep -c . "$work/$name.err")
  if [ "$lines" -eq 1 ] && grep -q "koff: error: .*$pattern" "$work/$name.err"; then ok; else
    bad "$name: expected one error line matching '$pattern', got: $(cat "$work/$name.err")"; fi
}
absent() { if [ ! -e "$1" ]; then ok; else bad "$1 was written on bad input"; fi; }

# --- the happy path ---
run pretrain 0 "$koff" pretrain --config "$work/tiny.json" --data "$work/data" --out "$work/pre"
[ -f "$work/pre/model/model.safetensors" ] && [ -f "$work/pre/model/tokenizer.json" ] && ok || bad "pretrain exported no model"
# Interrupted after 4 steps and resumed: the same model, byte for byte.
# The first part on a fixed thread count, the rest on the governor's (engine/cpu/threads.h): the bits
# must not depend on it.
run pretrain_part 0 "$koff" pretrain --config "$work/tiny.json" --data "$work/data" --out "$work/pre2" --stop-after 4 \
    --fixed-threads
run pretrain_resume 0 "$koff" pretrain --config "$work/tiny.json" --data "$work/data" --out "$work/pre2"
grep -q "resumed from" "$work/pretrain_resume.err" && ok || bad "the second pretrain run did not resume"
cmp -s "$work/pre/model/model.safetensors" "$work/pre2/model/model.safetensors" && ok || bad "resumed pretraining differs"
run offload 0 "$koff" offload --model "$work/pre/model" --data "$work/data" --target 0.2 --out "$work/run" \
    --steps 4 --batch 2 --seq 16 --lora-rank 2 --slots 2 --eval-tokens 64 --fixed-threads --profile
# --fixed-threads: every step on the starting count (engine/cpu/threads.h), which metrics.jsonl records,
# and the CPU profile says what its step ran on.
threads_expected=${OMP_NUM_THREADS:-$(nproc)}
[ "$(grep -c "\"threads\":$threads_expected[,}]" "$work/run/metrics.jsonl")" = 4 ] && ok \
  || bad "--fixed-threads: metrics.jsonl lacks \"threads\":$threads_expected on every step: $(cat "$work/run/metrics.jsonl")"
grep -q "this step ran on $threads_expected OpenMP thread" "$work/run/profile.txt" && grep -q "cpu runtime:" "$work/run/profile.txt" \
  && ok || bad "the CPU --profile does not say the step's thread count: $(cat "$work/run/profile.txt")"
for f in backbone/config.json backbone/model.safetensors memories/en/memory.safetensors memories/en/memory.json \
         memories/de/peft/adapter_config.json memories/de/peft/adapter_model.safetensors eval.json report.md; do
  [ -f "$work/run/$f" ] && ok || bad "offload did not write $f"
done
grep -q '"target_sparsity": 0.2' "$work/run/backbone/config.json" && grep -q '"achieved_sparsity"' "$work/run/backbone/config.json" \
  && ok || bad "backbone config.json lacks the koff target/achieved sparsity"
run eval_memory 0 "$koff" eval --model "$work/run/backbone" --memory "$work/run/memories/en" --data "$work/data/en/valid.txt" --seq 32
run generate 0 "$koff" generate --model "$work/run/backbone" --memory "$work/run/memories/de" --prompt "Die" -n 5 --temperature 0.8
run report 0 "$koff" report "$work/run"
run help 0 "$koff" offload --help
grep -q -- "--fixed-threads" "$work/help.out" && ok || bad "offload --help does not list --fixed-threads"
run pretrain_help 0 "$koff" pretrain --help
grep -q -- "--fixed-threads" "$work/pretrain_help.out" && ok || bad "pretrain --help does not list --fixed-threads"
# The GPU path (device tensors, bf16 compute, f32 trainables) on the host emulator, which crashes on any
# host access to device memory (engine/ops/emulated_device.h); with the per-op profile.
run offload_emulated_bf16 0 env KOFF_EMULATE_CUDA=1 "$koff" offload --model "$work/pre/model" --data "$work/data" \
    --target 0.2 --out "$work/run_emu" --steps 3 --batch 2 --seq 16 --lora-rank 2 --slots 2 --eval-tokens 64 \
    --device cuda --dtype bf16 --profile
grep -q "HOST EMULATOR" "$work/offload_emulated_bf16.err" && ok || bad "the emulated run did not say it was emulated"
[ -f "$work/run_emu/eval.json" ] && [ -f "$work/run_emu/memories/en/memory.safetensors" ] && ok || bad "emulated offload wrote no eval.json"
grep -q "MFU" "$work/run_emu/profile.txt" && grep -q "attention_backward" "$work/run_emu/profile.txt" \
  && grep -q "MFU" "$work/offload_emulated_bf16.err" && ok || bad "--profile printed/wrote no per-op profile"
run eval_emulated 0 env KOFF_EMULATE_CUDA=1 "$koff" eval --model "$work/run_emu/backbone" --memory "$work/run_emu/memories/en" \
    --data "$work/data/en/valid.txt" --seq 32 --device cuda --dtype bf16
run generate_emulated 0 env KOFF_EMULATE_CUDA=1 "$koff" generate --model "$work/run_emu/backbone" \
    --memory "$work/run_emu/memories/de" --prompt "Die" -n 4 --device cuda --dtype bf16

# --- bad input: one line, exit 2, nothing written ---
run target_out_of_range 2 "$koff" offload --model "$work/pre/model" --data "$work/data" --target 1.2 --out "$work/bad1"
one_error_line target_out_of_range "target"
absent "$work/bad1"
mkdir -p "$work/data_missing/en" && cp "$work/data/en/train.txt" "$work/data_missing/en/"
run missing_valid 2 "$koff" offload --model "$work/pre/model" --data "$work/data_missing" --target 0.1 --out "$work/bad2"
one_error_line missing_valid "valid.txt is missing"
absent "$work/bad2"
mkdir -p "$work/data_empty/en" && cp "$work/data/en/train.txt" "$work/data_empty/en/" && : > "$work/data_empty/en/valid.txt"
run empty_domain 2 "$koff" offload --model "$work/pre/model" --data "$work/data_empty" --target 0.1 --out "$work/bad3"
one_error_line empty_domain "is empty"
absent "$work/bad3"
run bf16_on_cpu 2 "$koff" offload --model "$work/pre/model" --data "$work/data" --target 0.1 --out "$work/bad5" --dtype bf16
one_error_line bf16_on_cpu "bf16 needs --device cuda"
absent "$work/bad5"
run bad_device 2 "$koff" offload --model "$work/pre/model" --data "$work/data" --target 0.1 --out "$work/bad6" --device tpu
one_error_line bad_device "device must be cpu, cuda or cuda:N"
absent "$work/bad6"
if ! command -v nvidia-smi >/dev/null 2>&1; then  # no GPU here: --device cuda says why, in one line
  run no_gpu 2 env -u KOFF_EMULATE_CUDA "$koff" offload --model "$work/pre/model" --data "$work/data" --target 0.1 \
      --out "$work/bad7" --device cuda
  one_error_line no_gpu "device cuda: "
  absent "$work/bad7"
fi
run no_domain 2 "$koff" offload --model "$work/pre/model" --data "$work/nowhere" --target 0.1 --out "$work/bad4"
one_error_line no_domain "does not exist"
absent "$work/bad4"
run foreign_memory 2 "$koff" eval --model "$work/pre/model" --memory "$work/run/memories/en" --data "$work/data/en/valid.txt"
one_error_line foreign_memory "another backbone"
head -c 100 "$work/pre/model/model.safetensors" > "$work/truncated.safetensors"
run truncated 2 "$koff" inspect "$work/truncated.safetensors"
one_error_line truncated "truncated.safetensors"
mkdir -p "$work/gpt2" && sed 's/"llama"/"gpt2"/' "$work/pre/model/config.json" > "$work/gpt2/config.json"
cp "$work/pre/model/model.safetensors" "$work/gpt2/"
run unsupported_model 2 "$koff" inspect "$work/gpt2"
one_error_line unsupported_model "model_type"
run bad_ids 2 "$koff" logits --model "$work/pre/model" --ids 1,x,3 --out "$work/bad.npy"
one_error_line bad_ids "not an integer"
absent "$work/bad.npy"

# --- the real pretrained model (GGUF), fetched by tools/setup.sh ---
gguf="$src/.cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ]; then
  bad "$gguf is missing: run bash tools/setup.sh (it fetches SmolLM2)"
else
  # A simple instruction, greedy: the answer must be the right one.
  run smollm2_generate 0 "$koff" generate --model "$gguf" -n 12 \
    --prompt $'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n'
  if grep -q "Paris" "$work/smollm2_generate.out"; then ok; else bad "smollm2_generate: $(cat "$work/smollm2_generate.out")"; fi
  # Its tokenizer comes from the file's metadata.
  printf 'Hello world' | "$koff" tokenize --tokenizer "$gguf" > "$work/smollm2_ids.out" 2>&1
  if grep -q "19556" "$work/smollm2_ids.out"; then ok; else bad "smollm2 tokenize: $(cat "$work/smollm2_ids.out")"; fi
  # The whole method on it, briefly: two English domains, KOFF at 5%, export, evaluation, cross matrix.
  for d in bible novel; do
    mkdir -p "$work/en2/$d"
    head -n 200 "$src/.cache/domains/$d/train.txt" > "$work/en2/$d/train.txt"
    head -n 20 "$src/.cache/domains/$d/valid.txt" > "$work/en2/$d/valid.txt"
  done
  run smollm2_offload 0 "$koff" offload --model "$gguf" --data "$work/en2" --target 0.05 --out "$work/smol" \
    --steps 2 --batch 2 --seq 32 --eval-tokens 64
  [ -f "$work/smol/eval.json" ] && [ -f "$work/smol/backbone/tokenizer.json" ] && ok || bad "smollm2_offload wrote no eval.json"

  # Bad GGUF files: truncated, an unknown quantisation type, metadata that contradicts the shapes.
  head -c 3000000 "$gguf" > "$work/truncated.gguf"
  run gguf_truncated 2 "$koff" eval --model "$work/truncated.gguf" --data "$work/data/en/valid.txt"
  one_error_line gguf_truncated "truncated.gguf.*truncated"
  python3 - "$gguf" "$work" <<'PY'
import struct, sys
src, work = sys.argv[1], sys.argv[2]
data = bytearray(open(src, "rb").read())
# token_embd.weight's tensor info: name, u32 n_dims (2), 2 x u64 dims, u32 ggml type -> 99.
name = b"token_embd.weight"
at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
n_dims = struct.unpack_from("<I", data, at)[0]
t = data[:]
struct.pack_into("<I", t, at + 4 + 8 * n_dims, 99)
open(work + "/unknown_type.gguf", "wb").write(t)
# llama.feed_forward_length (u32) -> 1000: every ffn tensor now contradicts the metadata.
key = b"llama.feed_forward_length"
at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
assert struct.unpack_from("<I", data, at)[0] == 4  # UINT32
struct.pack_into("<I", data, at + 4, 1000)
open(work + "/contradicts.gguf", "wb").write(data)
PY
  run gguf_unknown_type 2 "$koff" eval --model "$work/unknown_type.gguf" --data "$work/data/en/valid.txt"
  one_error_line gguf_unknown_type "token_embd.weight.*unknown ggml type 99"
  run gguf_contradicts 2 "$koff" eval --model "$work/contradicts.gguf" --data "$work/data/en/valid.txt"
  one_error_line gguf_contradicts "do not match the metadata.*ffn_gate.weight is \[1536, 576\] but the metadata implies \[1000, 576\]"
  rm -f "$work/truncated.gguf" "$work/unknown_type.gguf" "$work/contradicts.gguf"
fi

# --- the CPU runtime (engine/cpu/runtime.h) ---
# A bare environment: koff settles OpenMP's wait policy and malloc's thresholds (and the OpenBLAS
# kernels where this CPU needs it) and `koff env` shows them as exports.
bare=(env -u OPENBLAS_CORETYPE -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u MALLOC_MMAP_THRESHOLD_ -u MALLOC_TRIM_THRESHOLD_
      -u GLIBC_TUNABLES -u KOFF_CPU_RUNTIME_SET -u KOFF_MALLOC_SET)
run env_bare 0 "${bare[@]}" "$koff" env
for want in "^export OMP_WAIT_POLICY='passive'" "^export MALLOC_MMAP_THRESHOLD_='33554432'" \
            "^export MALLOC_TRIM_THRESHOLD_='2147483647'" "malloc keeps freed memory.*set by koff"; do
  if grep -q "$want" "$work/env_bare.out"; then ok; else bad "env_bare: no line matching '$want' in: $(cat "$work/env_bare.out")"; fi
done
# The user's own settings are left alone.
run env_user 0 "${bare[@]}" OMP_WAIT_POLICY=active MALLOC_TRIM_THRESHOLD_=1000000 "$koff" env
if grep -q "^export OMP_WAIT_POLICY='active'" "$work/env_user.out" &&
   grep -q "^export MALLOC_TRIM_THRESHOLD_='1000000'" "$work/env_user.out" &&
   ! grep -q "^export MALLOC_MMAP_THRESHOLD_\|^export KOFF_MALLOC_SET\|set by koff: .*OMP_WAIT_POLICY" "$work/env_user.out"; then ok; else
  bad "env_user: the user's settings were changed: $(cat "$work/env_user.out")"; fi
run env_dynamic 0 "${bare[@]}" OMP_DYNAMIC=true "$koff" env
if grep -q "WARNING: OMP_DYNAMIC=true" "$work/env_dynamic.out"; then ok; else
  bad "env_dynamic: no warning about OMP_DYNAMIC=true: $(cat "$work/env_dynamic.out")"; fi

echo "cli: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
