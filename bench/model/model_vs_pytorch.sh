#!/usr/bin/env bash
# Forward and training-step tokens/s of a model on CPU, koff against PyTorch eager, same thread count,
# measured in one run, with the ratio.
#   bench/model/model_vs_pytorch.sh [MODEL_DIR] [batch] [seq] [iterations]
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-models/embedded} B=${2:-8} T=${3:-256} it=${4:-5}
threads=${OMP_NUM_THREADS:-$(nproc)}
py=${KOFF_VENV:-$HOME/.cache/koff/venv}/bin/python
ours=$(OMP_NUM_THREADS=$threads ./build/bench/model/bench_model "$model" "$B" "$T" "$it")
theirs=$("$py" bench/model/bench_model_torch.py "$model" "$B" "$T" "$it" "$threads" 2>/dev/null)
echo "$ours"
echo "$theirs"
"$py" - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k in ("forward_tokens_per_s", "train_tokens_per_s"):
    print(f"{k:22s} koff {a[k]:9.0f}  {b['engine']} {b[k]:9.0f}  ratio {a[k] / b[k]:.2f}x")
PY
