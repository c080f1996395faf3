#!/usr/bin/env python3
"""Reference values for koff's GGUF reader, from PyPI `gguf` and Hugging Face `transformers`.

  gguf_reference.py quants OUT_DIR
      OUT_DIR/quants.gguf: one tensor per type koff dequantises (F32 F16 BF16 F64 Q4_0 Q4_1 Q5_0 Q5_1
      Q8_0 Q4_K Q5_K Q6_K), random blocks with finite scales, written by gguf's GGUFWriter, and
      OUT_DIR/<TYPE>.npy: gguf.quants.dequantize of the same bytes.

  gguf_reference.py model GGUF DOMAINS_DIR OUT_DIR
      transformers loading GGUF (from_pretrained(..., gguf_file=...), which dequantises with gguf):
      OUT_DIR/prompt<k>_ids.npy and prompt<k>_logits.npy (float32 [T, vocab]) for a few prompts;
      for every DOMAINS_DIR/<domain>/valid.txt (one paragraph per line), OUT_DIR/<domain>_ids.npy
      (all ids, concatenated) and <domain>_lengths.npy (ids per paragraph) from the tokenizer that
      transformers builds from the file's metadata.
"""
import os
import sys

import numpy as np


def quants(out):
    import gguf
    from gguf import GGMLQuantizationType as T

    rng = np.random.default_rng(1234)
    os.makedirs(out, exist_ok=True)
    w = gguf.GGUFWriter(os.path.join(out, "quants.gguf"), "llama")
    w.add_string("koff.test", "quants")
    rows, cols = 3, 512  # 512 is a multiple of every block size (32, 256)

    def finite_f16(n):
        return (rng.standard_normal(n) * 0.05).astype(np.float16).view(np.uint8).reshape(n, 2)

    # Byte offsets of the f16 scales inside each block type (ggml-common.h), made finite.
    scale_fields = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
                    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}
    for qt, fields in scale_fields.items():
        block, size = gguf.GGML_QUANT_SIZES[qt]
        nblocks = rows * cols // block
        raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
        for f in fields:
            raw[:, f:f + 2] = finite_f16(nblocks)
        raw = raw.reshape(rows, cols // block * size)
        w.add_tensor(qt.name, raw, raw_dtype=qt)
        np.save(os.path.join(out, qt.name + ".npy"), gguf.quants.dequantize(raw, qt).astype(np.float32))
    values = rng.standard_normal((rows, cols))
    for name, dt, qt in (("F32", np.float32, T.F32), ("F16", np.float16, T.F16), ("F64", np.float64, T.F64)):
        a = values.astype(dt)
        w.add_tensor(name, a, raw_dtype=qt)
        np.save(os.path.join(out, name + ".npy"), a.astype(np.float32))
    bf = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("BF16", bf.view(np.uint8).reshape(rows, cols * 2), raw_dtype=T.BF16)
    np.save(os.path.join(out, "BF16.npy"), (bf.astype(np.uint32) << 16).view(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. In 1892, Sherlock Holmes",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "And God said, Let there be light: and there was light.",
]


def model(gguf_path, domains_dir, out):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    m = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    m.eval()
    for k, prompt in enumerate(PROMPTS):
        ids = tok(prompt, add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            logits = m(torch.tensor([ids])).logits[0].float().numpy()
        np.save(os.path.join(out, f"prompt{k}_ids.npy"), np.array(ids, dtype=np.int64))
        np.save(os.path.join(out, f"prompt{k}_logits.npy"), logits)
    for domain in sorted(os.listdir(domains_dir)):
        path = os.path.join(domains_dir, domain, "valid.txt")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            paragraphs = [line.rstrip("\n") for line in f if line.strip()]
        enc = tok(paragraphs, add_special_tokens=False)["input_ids"]
        np.save(os.path.join(out, f"{domain}_ids.npy"), np.array([i for e in enc for i in e], dtype=np.int64))
        np.save(os.path.join(out, f"{domain}_lengths.npy"), np.array([len(e) for e in enc], dtype=np.int64))
    print(f"gguf_reference: {len(PROMPTS)} prompts, domains of {domains_dir} -> {out}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "quants":
        quants(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "model":
        model(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
