#!/usr/bin/env python3
"""The same measurement as bench_model.cpp in PyTorch eager on CPU: forward (no grad) and a training
step (forward + backward + AdamW) of a Hugging Face model directory, in tokens/s."""
import json
import sys
import time

import torch
import transformers


def main():
    model_dir = sys.argv[1]
    B = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    T = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    iters = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else torch.get_num_threads()
    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="sdpa")
    V = model.config.vocab_size
    ids = (torch.arange(B * T) * 7919 % V).reshape(B, T)

    def timed(fn):
        fn()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) / iters

    model.eval()
    with torch.no_grad():
        fwd = timed(lambda: model(input_ids=ids))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()

    train = timed(step)
    print(json.dumps({"engine": "pytorch " + torch.__version__, "threads": torch.get_num_threads(), "batch": B, "seq": T,
                      "forward_tokens_per_s": B * T / fwd, "train_tokens_per_s": B * T / train}))


if __name__ == "__main__":
    main()
