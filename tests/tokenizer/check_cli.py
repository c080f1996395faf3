#!/usr/bin/env python3
"""End-to-end check of `koff train-tokenizer` and `koff tokenize` against HF `tokenizers`:
train a small vocabulary with the CLI, have HF load it, and compare `koff tokenize` line by line
(ids, then --decode back to the text); the same on the real Llama 3 file when present; and the
one-line error with exit status 2 for invalid UTF-8 and a broken tokenizer.json.

Usage: check_cli.py KOFF_BINARY TESTDATA_DIR"""
import json
import os
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer


def run(cmd, stdin=b""):
    return subprocess.run(cmd, input=stdin, capture_output=True)


def compare(koff, tok_path, lines, what):
    text = ("\n".join(lines) + "\n").encode()
    r = run([koff, "tokenize", "--tokenizer", tok_path], text)
    assert r.returncode == 0, f"{what}: koff tokenize failed: {r.stderr.decode()}"
    got = [[int(x) for x in l.split()] for l in r.stdout.decode().split("\n")[:-1]]
    want = [e.ids for e in Tokenizer.from_file(tok_path).encode_batch(lines)]
    assert len(got) == len(want), f"{what}: {len(got)} output lines for {len(want)} input lines"
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    assert not bad, f"{what}: {len(bad)} lines differ from HF, first line {bad[0]}: {lines[bad[0]]!r}"
    r = run([koff, "tokenize", "--tokenizer", tok_path, "--decode", "--skip-special-tokens"], r.stdout)
    assert r.returncode == 0, f"{what}: koff tokenize --decode failed: {r.stderr.decode()}"
    back = r.stdout.decode().split("\n")[:-1]
    bad = [i for i in range(len(lines)) if back[i] != lines[i]]
    assert not bad, f"{what}: --decode differs on {len(bad)} lines, first {lines[bad[0]]!r} -> {back[bad[0]]!r}"
    print(f"check_cli: {what}: {len(lines)} lines, ids identical to HF, decode round-trips")


def compare_json_lines(koff, tok_path, docs, what):
    """--json-lines: whole documents (newlines, \\r, U+2028 included) as records, both directions."""
    text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()
    r = run([koff, "tokenize", "--tokenizer", tok_path, "--json-lines"], text)
    assert r.returncode == 0, f"{what}: koff tokenize --json-lines failed: {r.stderr.decode()}"
    got = [[int(x) for x in l.split()] for l in r.stdout.decode().split("\n")[:-1]]
    want = [e.ids for e in Tokenizer.from_file(tok_path).encode_batch(docs)]
    assert len(got) == len(want), f"{what}: {len(got)} output lines for {len(want)} records"
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    assert not bad, f"{what}: {len(bad)} records differ from HF, first {bad[0]}: {docs[bad[0]][:80]!r}"
    r = run([koff, "tokenize", "--tokenizer", tok_path, "--decode", "--json-lines", "--skip-special-tokens"], r.stdout)
    assert r.returncode == 0, f"{what}: koff tokenize --decode --json-lines failed: {r.stderr.decode()}"
    back = [json.loads(l) for l in r.stdout.decode("utf-8").split("\n")[:-1]]
    # HF's decode, not the input: the normalizer (NFC) and text outside the vocabulary change some.
    hf_back = Tokenizer.from_file(tok_path).decode_batch(want, skip_special_tokens=True)
    bad = [i for i in range(len(docs)) if back[i] != hf_back[i]]
    assert not bad, f"{what}: --decode --json-lines differs from HF on {len(bad)} records, first {docs[bad[0]][:80]!r}"
    multi = sum(1 for d in docs if "\n" in d)
    print(f"check_cli: {what} --json-lines: {len(docs)} records ({multi} multi-line), ids and decode identical to HF")


def main():
    koff, data = sys.argv[1], sys.argv[2]
    with open(os.path.join(data, "corpus.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(l) for l in f]
    # Lines without the characters Python or koff would treat as line breaks differently.
    lines = [l for d in docs for l in d.split("\n") if l and "\r" not in l and "\x0b" not in l and "\x0c" not in l
             and "\x1c" not in l and "\x1d" not in l and "\x1e" not in l and "\x85" not in l
             and "\u2028" not in l and "\u2029" not in l][:20000]
    with tempfile.TemporaryDirectory() as tmp:
        train = os.path.join(tmp, "train.txt")
        with open(train, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        out = os.path.join(tmp, "tok.json")
        r = run([koff, "train-tokenizer", "--files", train, "--vocab-size", "2000", "--out", out,
                 "--special-tokens", "<|endoftext|>,<|bos|>", "--bos", "<|bos|>"])
        assert r.returncode == 0, f"train-tokenizer failed: {r.stderr.decode()}"
        compare(koff, out, lines, "trained 2k vocabulary")
        compare_json_lines(koff, out, docs, "trained 2k vocabulary")
        manifest = json.load(open(os.path.join(data, "manifest.json")))
        if "llama3" in manifest["tokenizers"]:
            compare(koff, manifest["tokenizers"]["llama3"], lines, "llama3")

        r = run([koff, "tokenize", "--tokenizer", out], b"fine\nbad \xff\n")
        err = r.stderr.decode()
        assert r.returncode == 2 and err.count("\n") == 1 and "line 2" in err and "invalid UTF-8" in err, err
        r = run([koff, "tokenize", "--tokenizer", out, "--json-lines"], b'"fine"\n["not a string"]\n')
        err = r.stderr.decode()
        assert r.returncode == 2 and err.count("\n") == 1 and "line 2" in err and "JSON string" in err, err
        broken = os.path.join(tmp, "broken.json")
        with open(broken, "w") as f:
            f.write('{"model": {"type": "WordPiece", "vocab": {}}}')
        r = run([koff, "tokenize", "--tokenizer", broken], b"x\n")
        err = r.stderr.decode()
        assert r.returncode == 2 and err.count("\n") == 1 and "model.type" in err, err
        r = run([koff, "train-tokenizer", "--help"])
        assert r.returncode == 0 and b"--vocab-size" in r.stdout
        print("check_cli: errors are one line with exit status 2")


if __name__ == "__main__":
    main()
