#!/usr/bin/env python3
"""ctest fixture for the tokenizer tests: writes into --out
  corpus.jsonl                  (make_corpus.py)
  NormalizationTest.txt         (unpacked from unicode-data, for the NFC/NFD/NFKC/NFKD tests)
  <name>.ids.jsonl, ...         (hf_reference.py: Hugging Face reference ids)
Each step is skipped when its output is newer than its inputs, so reruns are quick."""
import argparse
import bz2
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def stale(output, inputs):
    if not os.path.exists(output):
        return True
    t = os.path.getmtime(output)
    return any(os.path.exists(i) and os.path.getmtime(i) > t for i in inputs)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--python", default=sys.executable)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    corpus = os.path.join(a.out, "corpus.jsonl")
    if stale(corpus, [os.path.join(HERE, "make_corpus.py")]):
        subprocess.check_call([a.python, os.path.join(HERE, "make_corpus.py"), corpus])
    nt_src = "/usr/share/unicode/NormalizationTest.txt.bz2"
    nt = os.path.join(a.out, "NormalizationTest.txt")
    if os.path.exists(nt_src) and stale(nt, [nt_src]):
        with bz2.open(nt_src, "rb") as f, open(nt + ".tmp", "wb") as g:
            g.write(f.read())
        os.replace(nt + ".tmp", nt)
    manifest = os.path.join(a.out, "manifest.json")
    if stale(manifest, [corpus, os.path.join(HERE, "hf_reference.py")]):
        subprocess.check_call([a.python, os.path.join(HERE, "hf_reference.py"),
                               "--corpus", corpus, "--data", a.data, "--out", a.out])


if __name__ == "__main__":
    main()
