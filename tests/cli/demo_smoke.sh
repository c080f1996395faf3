#!/usr/bin/env bash
# README's demo, shortened: the embedded model and corpus through every row of one target. It
# must exit 0 and print the section-8 table with the dense and KOFF rows, every number in it finite.
#   demo_smoke.sh KOFF_BINARY OUT_DIR
set -u
koff=$1 out=$2
rm -rf "$out"
"$koff" demo --out "$out" --steps 3 --targets 0.12 --eval-tokens 128 > "$out.stdout" 2> "$out.stderr"
status=$?
cat "$out.stdout"
[ $status -eq 0 ] || { echo "FAIL: koff demo exited $status: $(tail -n 5 "$out.stderr")"; exit 1; }
# Rows "| name | target | achieved | <ppl per domain> | mean |", header and separator skipped.
rows=$(grep '^| ' "$out.stdout" | grep -v '^| row ' )
for want in "dense" "dense+LoRA" "dense+KV" "dense+LoRA+KV" "prune-only, binary mask" "prune-only" \
            "KOFF-LoRA backbone alone" "KOFF-LoRA" "KOFF-KV" "KOFF backbone alone" "KOFF"; do
  grep -q "^| $want | " <<< "$rows" || { echo "FAIL: the table has no $want row"; exit 1; }
done
python3 - "$rows" <<'PY' || exit 1
import math, re, sys
# A cell is a number (an optional %), or "estimate [lower, upper]" with an optional "*" (significant);
# the dense row's "vs dense" cell is empty.
number = r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)"
cell = re.compile(rf"^({number})%?$|^({number}) \[({number}), ({number})\]( \*)?$")
bad = []
for line in sys.argv[1].splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    name, cells = cells[0], cells[1:]
    if name == "dense" and cells and cells[-1] == "":
        cells = cells[:-1]
    for c in cells:
        m = cell.match(c)
        if not m:
            bad.append(f"{line}: '{c}' is not a number")
            continue
        for v in (float(x) for x in m.groups()[:4] if x is not None):
            if not math.isfinite(v):
                bad.append(f"{line}: {c} is not finite")
if bad:
    print("FAIL: " + "; ".join(bad))
    sys.exit(1)
print(f"demo_smoke: {len(sys.argv[1].splitlines())} rows, every number finite")
PY
