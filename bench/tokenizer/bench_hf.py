#!/usr/bin/env python3
"""Encode throughput of Hugging Face `tokenizers`, the peer of bench_tokenizer.cpp: same corpus,
same modes, same thread count (set through RAYON_NUM_THREADS before tokenizers is imported).

Usage: bench_hf.py --tokenizer FILE --corpus CORPUS.jsonl [--threads N] [--mode batch|single] [--repeat R]"""
import argparse
import json
import os
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mode", choices=["batch", "single"], default="batch")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    from tokenizers import Tokenizer  # after the environment is set: rayon reads it once

    tok = Tokenizer.from_file(a.tokenizer)
    with open(a.corpus, encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    joined = "".join(d + "\n" for d in docs)
    nbytes = len(joined.encode()) - (len(docs) if a.mode == "batch" else 0)
    best = float("inf")
    n_ids = 0
    for r in range(a.repeat + 1):
        t0 = time.perf_counter()
        if a.mode == "batch":
            n_ids = sum(len(e.ids) for e in tok.encode_batch(docs))
        else:
            n_ids = len(tok.encode(joined).ids)
        s = time.perf_counter() - t0
        if r > 0:
            best = min(best, s)
    print(f"hf   {a.mode} threads={a.threads}: {nbytes / best / 1e6:.2f} MB/s ({nbytes / 1e6:.2f} MB, {n_ids} ids, "
          f"best of {a.repeat})")


if __name__ == "__main__":
    main()
