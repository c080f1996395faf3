#!/usr/bin/env python3
"""Small random Llama 3 / Qwen 2.5 / Qwen 3 checkpoints written by Hugging Face transformers itself,
with reference logits, loss and every weight gradient computed by transformers + torch autograd.

For each family a directory <out>/<name>/ gets: config.json and model.safetensors as
save_pretrained writes them (sharded for one of them), and reference.safetensors with
  input_ids [B, T] (int64), logits [B, T, V] (float32), loss [] and grad.<param name> for every
  parameter (float32).
The C++ suite tests/model/test_hf_parity.cpp loads the directory with koff and compares.
"""
import argparse
import os
import sys

try:
    import torch
    import transformers
    from safetensors.torch import save_file
except ImportError as e:
    sys.exit(f"hf_reference.py: {e}; run tools/setup.sh first")


def families():
    common = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, attn_implementation="eager")
    yield "llama3", transformers.LlamaConfig(
        **common, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64}), None
    yield "llama3_tied_sharded", transformers.LlamaConfig(
        **common, rope_theta=10000.0, tie_word_embeddings=True), "20KB"
    yield "qwen2", transformers.Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=False), None
    yield "qwen3", transformers.Qwen3Config(**common, head_dim=24, rope_theta=1000000.0,
                                            tie_word_embeddings=True), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    for name, config, shard in families():
        model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
        model.float()
        with torch.no_grad():  # non-trivial norm weights and biases, so they are exercised
            for pname, p in model.named_parameters():
                if "norm" in pname or pname.endswith(".bias"):
                    p.add_(0.1 * torch.randn_like(p))
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        kw = {"max_shard_size": shard} if shard else {}
        model.save_pretrained(d, safe_serialization=True, **kw)
        ids = torch.randint(0, config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        ref = {"input_ids": ids.contiguous(), "logits": out.logits.detach().float().contiguous(),
               "loss": out.loss.detach().float().reshape([])}
        for pname, p in model.named_parameters():
            ref["grad." + pname] = p.grad.detach().float().contiguous()
        save_file(ref, os.path.join(d, "reference.safetensors"))
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters -> {d}")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
