#!/usr/bin/env python3
"""Encodes a JSON Lines corpus with Hugging Face `tokenizers`: the reference for tokenizer.json
files koff writes itself (the trainer test). Writes one JSON array of ids per document.

Usage: hf_encode.py TOKENIZER.json CORPUS.jsonl OUT.jsonl"""
import json
import os
import sys

from tokenizers import Tokenizer


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    tok = Tokenizer.from_file(sys.argv[1])  # raises if HF cannot load the file
    with open(sys.argv[2], encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    encodings = tok.encode_batch(docs, add_special_tokens=True)
    tmp = sys.argv[3] + ".tmp"
    with open(tmp, "w") as f:
        for e in encodings:
            f.write(json.dumps(e.ids) + "\n")
    os.replace(tmp, sys.argv[3])


if __name__ == "__main__":
    main()
