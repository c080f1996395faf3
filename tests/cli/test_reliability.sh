#!/usr/bin/env bash
# Reliability of the command line (README, "The command line"): every bad input gives exit 2, ONE line
# naming the option or file and the problem, and writes nothing; a run resumes only what it started;
# a corrupt newest checkpoint falls back; a dead process's temporaries are removed; Ctrl-C inside a
# step and during the final evaluation stops the run (exit 130), and the same command resumes it bit
# for bit.
#   test_reliability.sh KOFF_BINARY SOURCE_DIR WORK_DIR
set -u
koff=$1 src=$2 work=$3
rm -rf "$work" "$work.logs" && mkdir -p "$work" "$work.logs"
logs=$work.logs
failures=0 passed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }
listing() { find "$work" | LC_ALL=C sort; }

# A tiny model and two small domains (as tests/cli/test_cli.sh); valid splits large enough that the
# final evaluation lasts seconds.
for lang in en de; do
  mkdir -p "$work/data/$lang"
  head -n 400 "$src/data/corpus/$lang/train.txt" > "$work/data/$lang/train.txt"
  head -n 300 "$src/data/corpus/$lang/valid.txt" > "$work/data/$lang/valid.txt"
done
cat > "$work/tiny.json" <<'JSON'
{"tokenizer": {"vocab_size": 400},
 "model": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": true},
 "train": {"steps": 4, "batch": 4, "seq": 32, "warmup": 2, "log_every": 2, "checkpoint_every": 2,
           "eval_every": 0, "eval_windows": 2}}
JSON
"$koff" pretrain --config "$work/tiny.json" --data "$work/data" --out "$work/pre" > "$logs/pretrain.log" 2>&1 \
  || { echo "FAIL: pretraining the tiny model: $(tail -n 3 "$logs/pretrain.log")"; exit 1; }
model=$work/pre/model data=$work/data

# --- bad input: one row per class; status, one line with the expected words, nothing written ---
mkdir -p "$work/tiny_train/en" "$work/utf8/en"
printf 'x\n' > "$work/tiny_train/en/train.txt" && cp "$data/en/valid.txt" "$work/tiny_train/en/"
printf 'Hello world.\n\nSecond line\nbad \xff byte\n' > "$work/utf8/en/train.txt" && cp "$data/en/valid.txt" "$work/utf8/en/"
sed 's/"steps": 4/"steps": "abc"/' "$work/tiny.json" > "$work/steps_abc.json"
sed 's/"hidden_size": 32/"hidden_size": 10000000/' "$work/tiny.json" > "$work/huge.json"
sed 's/"warmup": 2/"warmup": 2, "lr": -1/' "$work/tiny.json" > "$work/neg_lr.json"
ids=$(printf '5%.0s,' $(seq 2100)); ids=${ids%,}
offload=("$koff" offload --model "$model" --data "$data" --target 0.2 --out "$work/bad_run" --steps 2)
row() {  # row NAME STATUS WORDS CMD...: WORDS is a grep -E pattern for the one line on stderr
  local name=$1 want=$2 words=$3; shift 3
  local before; before=$(listing)
  "$@" > "$logs/$name.out" 2> "$logs/$name.err"
  local got=$? lines; lines=$(grep -c . "$logs/$name.err")
  if [ "$got" -ne "$want" ]; then bad "$name: exit $got, wanted $want: $(head -c 300 "$logs/$name.err")"
  elif [ "$lines" -ne 1 ] || ! grep -qE "koff: error: .*$words" "$logs/$name.err"; then
    bad "$name: expected one line matching '$words', got: $(head -c 400 "$logs/$name.err")"
  elif [ "$(listing)" != "$before" ]; then bad "$name: wrote $(diff <(echo "$before") <(listing) | grep '^>' | head -3)"
  else ok; fi
}
row offload_seq_over_context 2 "--seq 100000: .*context of 2048" "${offload[@]}" --seq 100000
row offload_accum_zero 2 "--accum 0: must be a positive" "${offload[@]}" --accum 0
row offload_lora_rank_zero 2 "--lora-rank 0: must be a positive" "${offload[@]}" --lora-rank 0
row offload_slots_negative 2 "--slots -1: must be a positive" "${offload[@]}" --slots -1
row offload_lr_nan 2 "--lr-gates nan: must be a finite" "${offload[@]}" --lr-gates nan
row offload_warmup_frac 2 "--warmup-frac 2: must be a fraction in \[0, 1\]" "${offload[@]}" --warmup-frac 2
row offload_eval_tokens_negative 2 "--eval-tokens -5: must be >= 0" "${offload[@]}" --eval-tokens -5
row offload_kd_nan 2 "--kd nan" "${offload[@]}" --kd nan
row offload_one_char_train 2 "tiny_train/en/train.txt: .* too few for one training window" \
    "$koff" offload --model "$model" --data "$work/tiny_train" --target 0.2 --out "$work/bad_run"
row offload_invalid_utf8 2 "utf8/en/train.txt:4: invalid UTF-8 .*byte offset 30 of the file" \
    "$koff" offload --model "$model" --data "$work/utf8" --target 0.2 --out "$work/bad_run"
row eval_seq_over_context 2 "--seq 5000: must be in \[1, 2048\]" "$koff" eval --model "$model" --data "$data" --seq 5000
row eval_seq_zero 2 "--seq 0: must be in" "$koff" eval --model "$model" --data "$data" --seq 0
row eval_seq_negative 2 "--seq -4: must be in" "$koff" eval --model "$model" --data "$data" --seq -4
row logits_over_context 2 "--ids: 2100 ids, more than the context of 2048" \
    "$koff" logits --model "$model" --ids "$ids" --out "$work/bad.npy"
row generate_n_negative 2 "--max-new-tokens -5: must be at least 1" "$koff" generate --model "$model" --prompt Die -n -5
row generate_n_over_context 2 "--max-new-tokens 5000: .*context of 2048" "$koff" generate --model "$model" --prompt Die -n 5000
row generate_temperature_negative 2 "--temperature -1: must be" "$koff" generate --model "$model" --prompt Die --temperature -1
row generate_temperature_nan 2 "--temperature nan: must be" "$koff" generate --model "$model" --prompt Die --temperature nan
row generate_top_p_nan 2 "--top-p nan: must be in \(0, 1\]" "$koff" generate --model "$model" --prompt Die --top-p nan
row pretrain_steps_abc 2 "steps_abc.json: train.steps: expected an integer, got \"abc\"" \
    "$koff" pretrain --config "$work/steps_abc.json" --data "$data" --out "$work/bad_pre"
row pretrain_huge_model 2 "huge.json: .*parameters need .* GB" \
    "$koff" pretrain --config "$work/huge.json" --data "$data" --out "$work/bad_pre"
row pretrain_negative_lr 2 "neg_lr.json: train.lr -1: must be" \
    "$koff" pretrain --config "$work/neg_lr.json" --data "$data" --out "$work/bad_pre"

# --- a run resumes only what it started ---
run=$work/run
args=(--out "$run" --steps 4 --batch 2 --seq 16 --lora-rank 2 --slots 2 --eval-tokens 64 --checkpoint-every 2)
"$koff" offload --model "$model" --data "$data" --target 0.2 "${args[@]}" > "$logs/run.out" 2> "$logs/run.err" \
  && [ -f "$run/eval.json" ] && ok || bad "offload: $(tail -n 3 "$logs/run.err")"
cp -r "$model" "$work/perturbed" && python3 - "$work/perturbed/model.safetensors" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-3] ^= 1; open(p, "wb").write(b)  # one weight's low bits
PY
mkdir -p "$work/one_domain" && cp -r "$data/en" "$work/one_domain/"
cp -r "$data" "$work/changed" && echo "One more paragraph." >> "$work/changed/de/train.txt"
cp "$run/run.json" "$work/run.json.before"
row resume_other_model 2 "holds another run: the base model differs .*perturbed/model.safetensors.*--force-new" \
    "$koff" offload --model "$work/perturbed" --data "$data" --target 0.2 "${args[@]}"
row resume_fewer_domains 2 "holds another run: the domains are \[en\] here but \[de, en\]" \
    "$koff" offload --model "$model" --data "$work/one_domain" --target 0.2 "${args[@]}"
row resume_changed_data 2 "holds another run: domain 'de': its train.txt has other contents" \
    "$koff" offload --model "$model" --data "$work/changed" --target 0.2 "${args[@]}"
row resume_other_target 2 "holds another run: setting target is 0.25 here but 0.2" \
    "$koff" offload --model "$model" --data "$data" --target 0.25 "${args[@]}"
cmp -s "$run/run.json" "$work/run.json.before" && ok || bad "a refused rerun rewrote run.json"
"$koff" offload --model "$work/perturbed" --data "$data" --target 0.2 "${args[@]}" --force-new > "$logs/force.out" 2> "$logs/force.err" \
  && grep -q "perturbed" "$run/run.json" && ! grep -q "resumed" "$logs/force.err" && ok \
  || bad "--force-new did not start over: $(tail -n 3 "$logs/force.err")"
rm -rf "$run" && "$koff" offload --model "$model" --data "$data" --target 0.2 "${args[@]}" > "$logs/run.out" 2> "$logs/run.err" \
  || bad "offload again: $(tail -n 3 "$logs/run.err")"

# --- recovery: a truncated newest checkpoint falls back to the previous one; orphans are removed ---
cp "$run/backbone/model.safetensors" "$work/backbone.ref"
head -c 200 "$run/ckpt/step-4/state.safetensors" > "$work/t" && mv "$work/t" "$run/ckpt/step-4/state.safetensors"
sleep 0 & dead=$!; wait $dead  # a pid that no longer exists
echo partial > "$run/backbone/model.safetensors.tmp.$dead.1"
"$koff" offload --model "$model" --data "$data" --target 0.2 "${args[@]}" > "$logs/fallback.out" 2> "$logs/fallback.err"
[ $? -eq 0 ] && grep -q "warning: skipping checkpoint .*step-4" "$logs/fallback.err" && grep -q "resumed .* at step 2" "$logs/fallback.err" \
  && ok || bad "no fallback to the previous checkpoint: $(tail -n 5 "$logs/fallback.err")"
cmp -s "$run/backbone/model.safetensors" "$work/backbone.ref" && ok || bad "the run resumed from the previous checkpoint differs"
[ ! -e "$run/backbone/model.safetensors.tmp.$dead.1" ] && ok || bad "a dead process's temporary file was not removed"

# --- signals: Ctrl-C inside a long step and during the final evaluation; the same command resumes ---
long=(--model "$model" --data "$data" --target 0.2 --steps 2 --batch 16 --seq 512 --accum 4 --lora-rank 2 --slots 2
      --checkpoint-every 1)
"$koff" offload "${long[@]}" --out "$work/ref" --eval-tokens 64 > "$logs/ref.out" 2> "$logs/ref.err" \
  || bad "reference run: $(tail -n 3 "$logs/ref.err")"
interrupt_when() {  # interrupt_when NAME CONDITION CMD...: SIGINT once CONDITION holds; prints seconds to exit
  local name=$1 cond=$2; shift 2
  "$@" > "$logs/$name.out" 2> "$logs/$name.err" &
  local pid=$! waited=0
  until eval "$cond"; do
    sleep 0.1; waited=$((waited + 1))
    if [ $waited -gt 3000 ] || ! kill -0 $pid 2>/dev/null; then bad "$name: never reached '$cond'"; wait $pid; return; fi
  done
  local t0; t0=$(date +%s.%N)
  kill -INT $pid
  local limit=$((SECONDS + 60))
  while kill -0 $pid 2>/dev/null && [ $SECONDS -lt $limit ]; do sleep 0.05; done
  if kill -0 $pid 2>/dev/null; then bad "$name: still running 60 s after Ctrl-C"; kill -9 $pid; fi
  wait $pid; local rc=$?
  echo "$name: exited $rc, $(echo "$(date +%s.%N) - $t0" | bc) s after Ctrl-C"
  [ $rc -eq 130 ] && ok || bad "$name: exit $rc after Ctrl-C, wanted 130: $(tail -n 2 "$logs/$name.err")"
}
sig=$work/sig
# Step 1 is checkpointed (ckpt/latest exists): Ctrl-C lands inside step 2.
interrupt_when in_step "[ -f '$sig/ckpt/latest' ]" "$koff" offload "${long[@]}" --out "$sig" --eval-tokens 0
grep -q "in step 2: the step was abandoned; the checkpoint of step 1" "$logs/in_step.err" && ok \
  || bad "in_step: $(tail -n 2 "$logs/in_step.err")"
ls "$sig/ckpt" | grep -q tmp && bad "in_step left a temporary checkpoint" || ok
# Resumed: trains step 2, exports, and is interrupted while evaluating.
interrupt_when in_eval "grep -q '^exported' '$logs/in_eval.err' 2>/dev/null" "$koff" offload "${long[@]}" --out "$sig" --eval-tokens 0
grep -q "resumed .* at step 1" "$logs/in_eval.err" && grep -q "checkpoints in .* are kept" "$logs/in_eval.err" && ok \
  || bad "in_eval: $(tail -n 2 "$logs/in_eval.err")"
[ ! -f "$sig/eval.json" ] && ok || bad "in_eval: eval.json written although interrupted"
[ -z "$(find "$sig" -name '*.tmp.*')" ] && ok || bad "in_eval left temporary files: $(find "$sig" -name '*.tmp.*')"
# The same command (the evaluation size is not part of the run's identity) completes it, bit for bit.
"$koff" offload "${long[@]}" --out "$sig" --eval-tokens 64 > "$logs/sig_done.out" 2> "$logs/sig_done.err" \
  || bad "resuming after Ctrl-C: $(tail -n 3 "$logs/sig_done.err")"
for f in backbone/model.safetensors memories/en/memory.safetensors memories/de/memory.safetensors eval.json; do
  cmp -s "$sig/$f" "$work/ref/$f" && ok || bad "interrupted twice and resumed: $f differs from the uninterrupted run's"
done

echo "reliability: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
