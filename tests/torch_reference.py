#!/usr/bin/env python3
"""PyTorch reference values for koff's fused ops (an independent implementation: torch autograd).

Writes reference/fused_ops.json: for each op and dtype (float32, float64) the inputs, the output and
the gradient of sum(output * probe) with respect to every differentiable input. The C++ suite
tests/torch_parity/test_torch_parity.cpp reads it and runs koff's ops on the same inputs.

The semantics follow Hugging Face transformers' Llama/Qwen code: RMSNorm as LlamaRMSNorm, RoPE with
rotate_half and the llama3 frequency scaling of `_compute_llama3_parameters`, SwiGLU as the MLP's
act_fn(gate) * up, attention with grouped KV heads. Memory slots (KOFF_METHOD.md section 5) are
prepended keys/values that every query sees and that carry no position.
"""
import argparse
import json
import math
import os
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the setup script installs it; say so plainly
    sys.exit("torch_reference.py: PyTorch is not importable; run tools/setup.sh first")


def tensor_json(t):
    t = t.detach().to(torch.float64).contiguous()
    return {"shape": list(t.shape), "data": [float(x) for x in t.reshape(-1).tolist()]}


def rand(gen, shape, dtype, lo=-1.0, hi=1.0):
    x = torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    return x.to(dtype).requires_grad_(True)


def finish(name, dtype, inputs, params, out, gen):
    """Backward of sum(out * probe); records inputs, output and input gradients."""
    probe = torch.rand(out.shape, generator=gen, dtype=torch.float64).to(dtype) * 2 - 1
    (out * probe).sum().backward()
    return {
        "name": name,
        "dtype": "f32" if dtype == torch.float32 else "f64",
        "params": params,
        "inputs": {k: tensor_json(v) for k, v in inputs.items()},
        "probe": tensor_json(probe),
        "output": tensor_json(out),
        "grads": {k: tensor_json(v.grad) for k, v in inputs.items() if v.requires_grad and v.grad is not None},
    }


def rmsnorm_case(gen, dtype):
    x, w = rand(gen, (2, 3, 16), dtype, -2, 2), rand(gen, (16,), dtype, 0.5, 1.5)
    eps = 1e-6
    variance = x.pow(2).mean(-1, keepdim=True)
    out = w * (x * torch.rsqrt(variance + eps))
    return finish("rmsnorm", dtype, {"x": x, "w": w}, {"eps": eps}, out, gen)


def llama3_inv_freq(dim, base, factor, low, high, orig, dtype):
    # transformers' _compute_default_rope_parameters + _compute_llama3_parameters
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype) / dim))
    if factor <= 0:
        return inv_freq
    low_wavelen, high_wavelen = orig / low, orig / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (orig / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_case(gen, dtype, scaled):
    B, T, N, hd, start, theta = 2, 4, 3, 16, 7, 10000.0
    factor, low, high, orig = (8.0, 1.0, 4.0, 64) if scaled else (0.0, 1.0, 4.0, 8192)
    x = rand(gen, (B, T, N, hd), dtype)
    inv_freq = llama3_inv_freq(hd, theta, factor, low, high, orig, dtype)
    pos = torch.arange(start, start + T, dtype=dtype)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    out = x * cos + rotate_half(x) * sin
    params = {"start": start, "theta": theta, "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
              "original_max_position_embeddings": orig}
    return finish("rope_llama3" if scaled else "rope", dtype, {"x": x}, params, out, gen)


def swiglu_case(gen, dtype):
    g, u = rand(gen, (2, 3, 10), dtype, -4, 4), rand(gen, (2, 3, 10), dtype)
    return finish("swiglu", dtype, {"gate": g, "up": u}, {}, F.silu(g) * u, gen)


def attention_case(gen, dtype):
    B, T, H, G, hd, m = 2, 5, 4, 2, 8, 3
    scale = 1.0 / math.sqrt(hd)
    q, k, v = rand(gen, (B, T, H, hd), dtype), rand(gen, (B, T, G, hd), dtype), rand(gen, (B, T, G, hd), dtype)
    mk, mv = rand(gen, (B, m, G, hd), dtype), rand(gen, (B, m, G, hd), dtype)
    keys = torch.cat([mk, k], dim=1).repeat_interleave(H // G, dim=2)     # [B, m+T, H, hd]
    values = torch.cat([mv, v], dim=1).repeat_interleave(H // G, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, keys) * scale            # [B, H, T, m+T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    visible = torch.cat([torch.ones(T, m, dtype=torch.bool), causal], dim=1)
    scores = scores.masked_fill(~visible, float("-inf"))
    out = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), values)
    return finish("attention_gqa_memory", dtype, {"q": q, "k": k, "v": v, "mem_k": mk, "mem_v": mv},
                  {"scale": scale}, out, gen)


def targets_for(gen, n, vocab):
    t = torch.randint(0, vocab, (n,), generator=gen)
    t[3] = -100  # an ignored position
    return t


def cross_entropy_case(gen, dtype):
    N, V = 8, 50
    logits, t = rand(gen, (N, V), dtype, -4, 4), targets_for(gen, N, V)
    out = F.cross_entropy(logits, t, ignore_index=-100)
    case = finish("cross_entropy", dtype, {"logits": logits}, {}, out, gen)
    case["targets"] = t.tolist()
    return case


def kl_div_case(gen, dtype):
    # Distillation term: KL(softmax(teacher) || softmax(logits)) summed over rows.
    logits, teacher = rand(gen, (6, 40), dtype, -4, 4), rand(gen, (6, 40), dtype, -4, 4).detach()
    out = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher, -1), log_target=True, reduction="sum")
    case = finish("kl_div", dtype, {"logits": logits}, {}, out, gen)
    case["teacher"] = tensor_json(teacher)
    return case


def linear_cross_entropy_case(gen, dtype):
    N, D, V = 8, 16, 50
    h, w, t = rand(gen, (N, D), dtype), rand(gen, (V, D), dtype), targets_for(gen, N, V)
    out = F.cross_entropy(h @ w.T, t, ignore_index=-100)
    case = finish("linear_cross_entropy", dtype, {"h": h, "w": w}, {}, out, gen)
    case["targets"] = t.tolist()
    return case


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory to write fused_ops.json into")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    cases = []
    for dtype in (torch.float32, torch.float64):
        cases += [rmsnorm_case(gen, dtype), rope_case(gen, dtype, False), rope_case(gen, dtype, True),
                  swiglu_case(gen, dtype), attention_case(gen, dtype), cross_entropy_case(gen, dtype),
                  linear_cross_entropy_case(gen, dtype), kl_div_case(gen, dtype)]
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fused_ops.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"torch": torch.__version__, "seed": args.seed, "cases": cases}, f)
    os.replace(path + ".tmp", path)
    print(f"wrote {len(cases)} cases to {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
