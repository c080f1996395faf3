#!/usr/bin/env bash
# koff's KOFF training step (`koff offload`) against the same step in PyTorch eager (koff_step_torch.py),
# CPU, f32, same thread count, run ALTERNATELY (koff, torch, koff, torch, ...), as tokens/s and a ratio.
#
#   bench/koff_step/koff_vs_pytorch.sh [--shape embedded|smollm2|both] [--rounds N] [--quick]
#                                      [--oversubscribed] [--threads N] [--steps N] [--warmup N]
#                                      [--control lagrangian|project] [--koff PATH] [--keep] [--smollm2-random]
#
# Shapes: embedded = models/embedded on data/corpus (6 domains), B 8, T 256;
#         smollm2  = SmolLM2-135M's shape, B 4, T 128: koff on .cache/models/smollm2/*.gguf (the real
#                    weights, dequantised to f32) and the 4 English domains of .cache/domains when
#                    tools/setup.sh fetched them, else on a random SmolLM2-shaped model directory made
#                    here (data/corpus, 6 domains; forced by --smollm2-random); PyTorch on random
#                    weights of the same config.
# --quick: 3 steps (1 warm-up), 2 rounds unless --rounds.  --oversubscribed: one busy process per
# core runs beside both sides during every round (killed on exit).
# Environment: KOFF_BIN (default build/koff, a Release build), KOFF_VENV (default ~/.cache/koff/venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

shape=both rounds= quick=0 over=0 threads=${OMP_NUM_THREADS:-$(nproc)} steps= warmup=1 control=lagrangian
koff=${KOFF_BIN:-build/koff} keep=0 smol_random=0
while [ $# -gt 0 ]; do
  case $1 in
    --shape) shape=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --oversubscribed) over=1; shift ;;
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --control) control=$2; shift 2 ;;
    --koff) koff=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --smollm2-random) smol_random=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "koff_vs_pytorch.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
case $shape in embedded|smollm2|both) ;; *) echo "--shape must be embedded, smollm2 or both" >&2; exit 2 ;; esac
case $control in lagrangian|project) ;; *) echo "--control must be lagrangian or project" >&2; exit 2 ;; esac
if [ "$quick" = 1 ]; then steps=${steps:-3} rounds=${rounds:-2}; fi
rounds=${rounds:-3}
py=${KOFF_VENV:-$HOME/.cache/koff/venv}/bin/python
[ -x "$koff" ] || { echo "no koff binary at $koff (build it, or --koff PATH / KOFF_BIN)" >&2; exit 2; }
[ -x "$py" ] || { echo "no Python at $py: run bash tools/setup.sh (or set KOFF_VENV)" >&2; exit 2; }
[ "$steps" = "" ] || [ "$steps" -gt "$warmup" ] || { echo "--steps must exceed --warmup" >&2; exit 2; }
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(dirname "$koff")/CMakeCache.txt" 2>/dev/null || true)
[ "${build_type:-?}" = Release ] || echo "warning: $koff is from a '${build_type:-unknown}' build, not Release" >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/koff_step.XXXXXX")
busy=()
cleanup() {
  for p in "${busy[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads MKL_NUM_THREADS=$threads PYTHONDONTWRITEBYTECODE=1

# A SmolLM2-135M-shaped model directory with random weights, for koff when the GGUF is not here
# (tokenizer.json of the embedded model: token ids < 8192, which does not change the step's cost).
make_random_smollm2() {
  "$py" - "$1" <<'PY'
import json, os, shutil, sys, torch
from safetensors.torch import save_file
sys.path.insert(0, "bench/koff_step")
from koff_step_torch import SMOLLM2_135M as c
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
cfg = dict(c, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", attention_bias=False,
           mlp_bias=False, max_position_embeddings=8192, bos_token_id=0, eos_token_id=0, rope_scaling=None)
json.dump(cfg, open(f"{out}/config.json", "w"), indent=2)
d, hd, H, G, F, V = c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"]
g = torch.Generator().manual_seed(0)
r = lambda *s: (torch.randn(*s, generator=g) * 0.02).to(torch.bfloat16)
w = {"model.embed_tokens.weight": r(V, d), "model.norm.weight": torch.ones(d, dtype=torch.bfloat16)}
for l in range(c["num_hidden_layers"]):
    p = f"model.layers.{l}."
    w.update({p + "input_layernorm.weight": torch.ones(d, dtype=torch.bfloat16),
              p + "post_attention_layernorm.weight": torch.ones(d, dtype=torch.bfloat16),
              p + "self_attn.q_proj.weight": r(H * hd, d), p + "self_attn.k_proj.weight": r(G * hd, d),
              p + "self_attn.v_proj.weight": r(G * hd, d), p + "self_attn.o_proj.weight": r(d, H * hd),
              p + "mlp.gate_proj.weight": r(F, d), p + "mlp.up_proj.weight": r(F, d), p + "mlp.down_proj.weight": r(d, F)})
save_file(w, f"{out}/model.safetensors", metadata={"format": "pt"})
shutil.copy("models/embedded/tokenizer.json", f"{out}/tokenizer.json")
PY
}

results=$work/results.jsonl
: > "$results"
run_shape() {  # name
  local name=$1 model data domains B T n tmodel
  if [ "$name" = embedded ]; then
    model=models/embedded data=data/corpus B=8 T=256 n=${steps:-8} tmodel=(--model models/embedded)
  else
    B=4 T=128 n=${steps:-6} tmodel=(--preset smollm2)
    model=$(ls .cache/models/smollm2/*.gguf 2>/dev/null | head -1 || true)
    if [ -n "$model" ] && [ -d .cache/domains/novel ] && [ "$smol_random" = 0 ]; then
      data=.cache/domains
    else
      model=$work/smollm2-random data=data/corpus
      echo "# $name: koff runs a random SmolLM2-shaped model ($model): --smollm2-random, or no GGUF / English domains"
      [ -f "$model/model.safetensors" ] || make_random_smollm2 "$model"
    fi
  fi
  domains=$(find "$data" -mindepth 2 -maxdepth 2 -name train.txt | wc -l)
  echo "# $name: koff --model $model --data $data ($domains domains), B $B, T $T, $n steps ($warmup warm-up), $threads threads, $rounds rounds, control $control"
  local kargs=(--model "$model" --data "$data" --target 0.12 --steps "$n" --batch "$B" --seq "$T"
               --sparsity-control "$control" --checkpoint-every 1000000 --eval-tokens 64 --eval-seq 32 --cross-tokens 64)
  local targs=("${tmodel[@]}" --batch "$B" --seq "$T" --domains "$domains" --steps "$n" --warmup "$warmup"
               --threads "$threads" --target 0.12 --control "$control")
  for ((i = 1; i <= rounds; i++)); do
    line=$("$py" bench/koff_step/koff_run.py "$koff" "$work/$name-koff-$i" "$warmup" -- "${kargs[@]}")
    echo "$line" | sed "s/^{/{\"shape\": \"$name\", \"round\": $i, /" >> "$results"
    echo "  round $i koff : $line" | cut -c1-220
    "$py" bench/koff_step/koff_step_torch.py "${targs[@]}" > "$work/$name-torch-$i.log" 2>&1 ||
      { cat "$work/$name-torch-$i.log" >&2; exit 1; }
    [ "$i" = 1 ] && grep '^# SDPA\|^# torch\|^# weights' "$work/$name-torch-$i.log" | sed 's/^/  /'
    line=$(tail -1 "$work/$name-torch-$i.log")
    echo "$line" | sed "s/^{/{\"shape\": \"$name\", \"round\": $i, /" >> "$results"
    echo "  round $i torch: $line" | cut -c1-220
  done
}

if [ "$over" = 1 ]; then
  for ((c = 0; c < $(nproc); c++)); do (while :; do :; done) & busy+=($!); done
  echo "# oversubscribed: ${#busy[@]} busy processes (pids ${busy[*]}) beside both sides"
fi
echo "# koff $koff (${build_type:-unknown build}); $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$shape" = both ] || [ "$shape" = embedded ] && run_shape embedded
[ "$shape" = both ] || [ "$shape" = smollm2 ] && run_shape smollm2

"$py" - "$results" "$over" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("KOFF step, CPU f32" + (", OVERSUBSCRIBED (one busy process per core beside it)" if sys.argv[2] == "1" else "")
      + ": tokens/s over the timed steps, median over rounds [min, max]; ratio = median of the per-round koff/torch")
print(f"| shape | tokens/step | koff tok/s | torch tok/s | koff/torch | koff peak RSS MiB | torch peak RSS MiB (import torch alone) |")
print("|---|---|---|---|---|---|---|")
for shape in dict.fromkeys(r["shape"] for r in rows):
    k = [r for r in rows if r["shape"] == shape and r["engine"] == "koff"]
    t = [r for r in rows if r["shape"] == shape and r["engine"] != "koff"]
    kt, tt = [r["tokens_per_s"] for r in k], [r["tokens_per_s"] for r in t]
    ratio = st.median(a / b for a, b in zip(kt, tt))
    f = lambda v: f"{st.median(v):.0f} [{min(v):.0f}, {max(v):.0f}]"
    mem = lambda rs: f"{st.median(r['peak_rss_kb'] for r in rs) / 1024:.0f}"
    base = st.median(r.get("rss_after_import_kb", 0) for r in t) / 1024
    print(f"| {shape} | {k[0]['tokens_per_step']} | {f(kt)} | {f(tt)} | {ratio:.2f}x | {mem(k)} | {mem(t)} ({base:.0f}) |")
PY
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
