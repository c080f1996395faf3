#!/usr/bin/env python3
"""The tokenizer built from GGUF metadata on real vocabularies: llama.cpp's test vectors, and (where
the real tokenizer.json files are) the whole parity corpus against Hugging Face `tokenizers`.

  vectors   For each vocabulary koff supports, llama.cpp's models/ggml-vocab-NAME.gguf with its test
            texts (.inp, split on "\\n__ggml_vocab_test__\\n" exactly as llama.cpp's
            tests/test-tokenizer-0.cpp does, multi-line texts included) and the ids Hugging Face
            `tokenizers` gives them (.out): `koff tokenize --tokenizer NAME.gguf --json-lines
            --no-special-tokens` must give every expected id. Plus cases found here, each with its
            ids from the model's own tokenizer.json through HF `tokenizers` (EXTRA_CASES).
  corpus    The GGUF-built tokenizer against the model's tokenizer.json through HF `tokenizers`, on
            every document of the 2.2 MB parity corpus (tests/tokenizer/make_corpus.py), for the models
            that have both: Llama 3 (llama-bpe), Qwen (qwen2 vs Qwen 3's file) and GPT-2.

Exit status 0 when every case is equal, 1 on any difference (each printed with its text), 77 when the
data is missing (the message names it; ctest reports the test as skipped and tools/test.sh fails).

  check_llama_vocab.py vectors KOFF VOCAB_DIR
  check_llama_vocab.py corpus KOFF VOCAB_DIR TESTDATA_DIR
"""
import json
import os
import subprocess
import sys

# The vocabularies koff supports (byte-level BPE with the GPT-2, Llama 3, Qwen 2 and Qwen 3.5
# pre-tokenizers); tools/fetch_llama_vocab.sh fetches exactly these.
VOCABS = ["llama-bpe", "qwen2", "qwen35", "gpt-2"]

# Cases beyond llama.cpp's, with ids from the model's tokenizer.json via HF `tokenizers` 0.23.3
# (Llama 3: ../shared/data/tokenizers/llama3/tokenizer.json). "Cửa Việt": Llama 3's tokenizer.json
# has "ignore_merges": true, so " Việt", a vocabulary entry, is one token whatever the merges make
# of it; the GGUF file does not carry that flag (koff takes it from tokenizer.ggml.pre, as llama.cpp does).
EXTRA_CASES = {
    "llama-bpe": [("Cửa Việt", [34, 91163, 101798])],
}

# corpus mode: GGUF vocabulary -> the reference tokenizer.json, relative to the fixture's manifest.
# llama.cpp's qwen2 vocabulary is Qwen 1.5/2's: the same BPE as Qwen 3, but ids 151646.. are
# "[PAD151646]"... where Qwen 3 has <tool_call>, <think>...; the reference keeps only the added
# tokens the GGUF file has too (same id, same text), so what is compared is the same vocabulary.
CORPUS_PAIRS = {"llama-bpe": "llama3", "qwen2": "qwen3", "gpt-2": "gpt2"}


def reference_tokenizer(path, gguf):
    import gguf as gguf_py
    from tokenizers import Tokenizer

    fields = gguf_py.GGUFReader(gguf).fields["tokenizer.ggml.tokens"]
    tokens = [bytes(fields.parts[i]).decode("utf-8") for i in fields.data]
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    kept = [t for t in j["added_tokens"] if t["id"] < len(tokens) and tokens[t["id"]] == t["content"]]
    dropped = [t["content"] for t in j["added_tokens"] if t not in kept]
    j["added_tokens"] = kept
    return Tokenizer.from_str(json.dumps(j)), dropped

SKIP = 77


def skip(msg):
    print(f"SKIPPED: {msg}")
    sys.exit(SKIP)


def read_vectors(vocab_dir, name):
    """llama.cpp's test-tokenizer-0.cpp: texts split on the separator, ids one line each (stripped)."""
    base = os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf")
    with open(base + ".inp", "rb") as f:
        raw = f.read().decode("utf-8")
    with open(base + ".out", encoding="utf-8") as f:
        outs = f.read().split("\n")
    if outs and outs[-1] == "":
        outs.pop()
    sep = "\n__ggml_vocab_test__\n"
    texts = []
    pos = 0
    while pos < len(raw):
        nxt = raw.find(sep, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(sep)
    if len(texts) != len(outs):
        sys.exit(f"{base}.inp has {len(texts)} texts but {base}.out has {len(outs)} lines")
    ids = [[int(t) for t in o.strip().split()] for o in outs]
    return base, list(zip(texts, ids))


def koff_encode(koff, gguf, texts):
    stdin = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
    r = subprocess.run([koff, "tokenize", "--tokenizer", gguf, "--json-lines", "--no-special-tokens"],
                       input=stdin.encode("utf-8"), capture_output=True)
    if r.returncode != 0:
        sys.exit(f"koff tokenize --tokenizer {gguf} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    lines = r.stdout.decode("utf-8").split("\n")
    assert lines[-1] == "", "koff tokenize: output does not end with a newline"
    lines.pop()
    if len(lines) != len(texts):
        sys.exit(f"koff tokenize: {len(lines)} lines of ids for {len(texts)} records")
    return [[int(t) for t in line.split()] for line in lines]


def vectors(koff, vocab_dir):
    missing = [f"ggml-vocab-{n}.gguf{ext}" for n in VOCABS for ext in ("", ".inp", ".out")
               if not os.path.exists(os.path.join(vocab_dir, f"ggml-vocab-{n}.gguf{ext}"))]
    if missing:
        skip(f"llama.cpp's vocabularies are missing from {vocab_dir} ({', '.join(missing[:3])}"
             f"{', ...' if len(missing) > 3 else ''}): run 'bash tools/fetch_llama_vocab.sh'")
    failures = 0
    for name in VOCABS:
        gguf, cases = read_vectors(vocab_dir, name)
        cases += EXTRA_CASES.get(name, [])
        got = koff_encode(koff, gguf, [t for t, _ in cases])
        equal = 0
        for (text, want), have in zip(cases, got):
            if have == want:
                equal += 1
            else:
                failures += 1
                print(f"  {name}: {json.dumps(text, ensure_ascii=False)}\n    expected {want}\n    koff     {have}")
        multi = sum(1 for t, _ in cases if "\n" in t)
        print(f"{name}: {equal}/{len(cases)} cases equal ({multi} multi-line)")
    return 1 if failures else 0


def corpus(koff, vocab_dir, testdata):
    manifest_path = os.path.join(testdata, "manifest.json")
    if not os.path.exists(manifest_path):
        skip(f"{manifest_path} is missing (the tokenizer_reference fixture did not run)")
    with open(manifest_path) as f:
        manifest = json.load(f)
    if not manifest.get("available"):
        skip(f"the real tokenizer.json files are unavailable: {manifest.get('reason')}")
    with open(os.path.join(testdata, "corpus.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    failures = 0
    for name, ref in CORPUS_PAIRS.items():
        gguf = os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf")
        if not os.path.exists(gguf):
            skip(f"{gguf} is missing: run 'bash tools/fetch_llama_vocab.sh'")
        if ref not in manifest["tokenizers"]:
            skip(f"{ref} is not in {manifest_path}")
        hf, dropped = reference_tokenizer(manifest["tokenizers"][ref], gguf)
        if dropped:
            print(f"{name}: {len(dropped)} added tokens of {ref}'s tokenizer.json are not in the GGUF file, left out "
                  f"of the reference: {' '.join(dropped[:4])}{' ...' if len(dropped) > 4 else ''}")
        want = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
        have = koff_encode(koff, gguf, docs)
        bad = [i for i in range(len(docs)) if want[i] != have[i]]
        total = sum(len(w) for w in want)
        print(f"{name} (GGUF) vs {ref} (tokenizer.json): {len(docs) - len(bad)}/{len(docs)} documents equal, "
              f"{total} ids, {sum(len(d.encode('utf-8')) for d in docs)} bytes")
        for i in bad[:5]:
            k = next(k for k in range(min(len(want[i]), len(have[i])) + 1)
                     if k == min(len(want[i]), len(have[i])) or want[i][k] != have[i][k])
            print(f"  document {i}: first difference at id {k}: expected {want[i][k:k + 6]}, koff {have[i][k:k + 6]}\n"
                  f"    near {json.dumps(hf.decode(want[i][max(0, k - 3):k + 3]), ensure_ascii=False)}")
        failures += len(bad)
    return 1 if failures else 0


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("vectors", "corpus") or (sys.argv[1] == "corpus" and len(sys.argv) < 5):
        sys.exit(__doc__)
    mode, koff, vocab_dir = sys.argv[1:4]
    sys.exit(vectors(koff, vocab_dir) if mode == "vectors" else corpus(koff, vocab_dir, sys.argv[4]))


if __name__ == "__main__":
    main()
