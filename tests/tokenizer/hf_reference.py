#!/usr/bin/env python3
"""Reference ids from Hugging Face `tokenizers` for the tokenizer parity tests.

For each real tokenizer in the shared data folder (sha256-checked against its SHA256SUMS) this
encodes every document of the corpus with add_special_tokens=True and writes, into OUTDIR:
  gpt2.tokenizer.json     GPT-2's tokenizer.json, built here from encoder.json + vocab.bpe as HF's
                          gpt2 file is (ByteLevel BPE + <|endoftext|>)
  <name>.ids.jsonl        one JSON array of ids per document
  <name>.decoded.jsonl    HF's decode of those ids (skip_special_tokens=False), one JSON string each
  manifest.json           {"available": true|false, "reason": ..., "tokenizers": {name: path}}
Where the data folder is absent, the manifest says so and the C++ test skips with that reason.

Usage: hf_reference.py --corpus CORPUS.jsonl --data DIR --out OUTDIR [--only NAME ...]
"""
import argparse
import hashlib
import json
import os
import sys

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

FILES = {
    "llama3": "llama3/tokenizer.json",
    "qwen3": "qwen3/tokenizer.json",
    "mistral": "mistral/tokenizer.json",
    "gpt2": None,  # built from gpt2/encoder.json + gpt2/vocab.bpe
    # Variants that exercise code paths the four files do not: the Metaspace pre-tokenizer and
    # decoder of newer SentencePiece-style files (Mistral's vocabulary, prepend_scheme "first"),
    # and ByteLevel with add_prefix_space (GPT-2's vocabulary), and the added-token flags lstrip,
    # rstrip, single_word and normalized (Qwen 3's file with some flags turned on).
    "mistral_metaspace": "variant",
    "gpt2_prefix_space": "variant",
    "qwen3_flags": "variant",
}


def check_sums(data):
    sums = os.path.join(data, "SHA256SUMS")
    with open(sums) as f:
        for line in f:
            digest, name = line.split()
            with open(os.path.join(data, name), "rb") as g:
                actual = hashlib.sha256(g.read()).hexdigest()
            if actual != digest:
                sys.exit(f"hf_reference: {data}/{name}: sha256 {actual} does not match SHA256SUMS")


def build_gpt2(data, out_path):
    bpe = models.BPE.from_file(os.path.join(data, "gpt2/encoder.json"), os.path.join(data, "gpt2/vocab.bpe"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    tok.save(out_path)


def build_variant(name, data, out, path):
    if name == "mistral_metaspace":
        with open(os.path.join(data, "mistral/tokenizer.json"), encoding="utf-8") as f:
            j = json.load(f)
        j["normalizer"] = None
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
        j["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    elif name == "qwen3_flags":
        with open(os.path.join(data, "qwen3/tokenizer.json"), encoding="utf-8") as f:
            j = json.load(f)
        flags = {"<|im_start|>": {"lstrip": True}, "<|im_end|>": {"rstrip": True},
                 "<|endoftext|>": {"lstrip": True, "rstrip": True},
                 "<think>": {"normalized": True}, "</think>": {"single_word": True},
                 "<tool_call>": {"single_word": True, "normalized": True}}
        for tok in j["added_tokens"]:
            tok.update(flags.get(tok["content"], {}))
    else:
        gpt2 = os.path.join(out, "gpt2.tokenizer.json")
        if not os.path.exists(gpt2):
            build_gpt2(data, gpt2)
        with open(gpt2, encoding="utf-8") as f:
            j = json.load(f)
        j["pre_tokenizer"]["add_prefix_space"] = True
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--data", required=True, help="the shared tokenizers folder (with SHA256SUMS)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "manifest.json")

    if not os.path.exists(os.path.join(args.data, "SHA256SUMS")):
        with open(manifest_path, "w") as f:
            json.dump({"available": False, "tokenizers": {},
                       "reason": f"{args.data} (the real tokenizer files) is absent"}, f)
        print(f"hf_reference: {args.data} absent; the parity tests will skip")
        return
    check_sums(args.data)
    with open(args.corpus, encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]

    names = {}
    for name, rel in FILES.items():
        if args.only and name not in args.only:
            continue
        if rel is None:
            path = os.path.join(args.out, f"{name}.tokenizer.json")
            build_gpt2(args.data, path)
        elif rel == "variant":
            path = os.path.join(args.out, f"{name}.tokenizer.json")
            build_variant(name, args.data, args.out, path)
        else:
            path = os.path.abspath(os.path.join(args.data, rel))
        tok = Tokenizer.from_file(path)
        encodings = tok.encode_batch(docs, add_special_tokens=True)
        ids = [e.ids for e in encodings]
        decoded = tok.decode_batch(ids, skip_special_tokens=False)
        write_jsonl(os.path.join(args.out, f"{name}.ids.jsonl"), ids)
        write_jsonl(os.path.join(args.out, f"{name}.decoded.jsonl"), decoded)
        names[name] = os.path.abspath(path)
        print(f"hf_reference: {name}: {sum(len(i) for i in ids)} ids for {len(docs)} documents")
    with open(manifest_path, "w") as f:
        json.dump({"available": True, "tokenizers": names, "reason": ""}, f)


if __name__ == "__main__":
    main()
