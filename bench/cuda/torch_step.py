"""The KOFF training step of bench/cuda/gpu_bench.cpp written in PyTorch eager, same shapes, for a ratio.

Llama-3.2-3B shapes (hidden 3072, 24 heads, 8 KV heads, head_dim 128, intermediate 8192, vocab 128256,
tied embeddings), seq T, batch 1, frozen random bf16 weights (one layer's shared by all, as in the C++
bench), per layer LoRA r 8 / alpha 16 on q k v o gate up down, hard-concrete gates on heads and
neurons, 16 KV memory slots per KV head attended by every query (causal over the real tokens), the
full-vocabulary cross-entropy, AdamW (foreach) on f32 master copies cast to bf16 each step.
Attention is F.scaled_dot_product_attention with an explicit [T, m + T] mask (memory columns always
visible), GQA through enable_gqa. Prints the SDPA backend that call can take (`attention backend: ...`:
an explicit mask rules out the flash kernel) and one line `TORCH_STEP ms=... tokens_per_s=...`.
"""
import argparse
import math

import torch
import torch.nn.functional as F


def sdpa_backend(H, G, hd, m, T, dtype, dev):
    """The first SDPA backend, in PyTorch's own order of preference, that accepts the step's call."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.zeros(1, H, T, hd, dtype=dtype, device=dev)
    kv = torch.zeros(1, G, m + T, hd, dtype=dtype, device=dev)
    mask = torch.ones(T, m + T, dtype=torch.bool, device=dev)
    for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH):
        try:
            with sdpa_kernel([b]):
                F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask, enable_gqa=True)
            return b.name
        except RuntimeError:
            continue
    return "none"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    L, T = args.layers, args.seq
    D, Fd, H, G, hd, m, V, r = 3072, 8192, 24, 8, 128, 16, 128256, 8
    dev, bf = "cuda", torch.bfloat16
    torch.manual_seed(0)
    rnd = lambda *s, std=0.02: (torch.randn(*s, device=dev) * std).to(bf)
    wq, wk, wv, wo = rnd(D, D), rnd(G * hd, D), rnd(G * hd, D), rnd(D, D)
    wg, wu, wd = rnd(Fd, D), rnd(Fd, D), rnd(D, Fd)
    embed = rnd(4096, D).repeat((V + 4095) // 4096, 1)[:V].contiguous()
    ones = torch.ones(D, device=dev, dtype=bf)
    outs, ins = [D, G * hd, G * hd, D, Fd, Fd, D], [D, D, D, D, D, D, Fd]
    master = []
    for _ in range(L):
        for p in range(7):
            master.append(torch.randn(r, ins[p], device=dev) * 0.01)
            master.append(torch.zeros(outs[p], r, device=dev))
        master += [torch.randn(1, m, G, hd, device=dev), torch.randn(1, m, G, hd, device=dev),
                   torch.full((H,), 3.0, device=dev), torch.full((Fd,), 3.0, device=dev)]
    master = [p.requires_grad_() for p in master]
    opt = torch.optim.AdamW(master, lr=1e-3, weight_decay=0.0, foreach=True)
    ids = (torch.arange(T, device=dev) * 7919) % V
    targets = ((torch.arange(T, device=dev) + 1) * 7919) % V
    inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=dev).float() / hd))
    ang = torch.arange(T, device=dev).float()[:, None] * inv[None]
    cos, sin = ang.cos().to(bf), ang.sin().to(bf)
    mask = torch.ones(T, m + T, dtype=torch.bool, device=dev)
    mask[:, m:] = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    beta, gamma, zeta = 2.0 / 3.0, -0.1, 1.1

    def rope(x):  # x [1, T, n, hd], rotate_half
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        c, s = cos[None, :, None], sin[None, :, None]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def gate(la, n):
        u = torch.rand(n, device=dev).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (-u).log1p() + la) / beta)
        return (s * (zeta - gamma) + gamma).clamp(0, 1)

    def step():
        w16 = [p.to(bf) for p in master]
        x = F.embedding(ids, embed)[None]
        k = 0
        for _ in range(L):
            lo = [(w16[k + 2 * p], w16[k + 2 * p + 1]) for p in range(7)]
            k += 14
            mk, mv, la_h, la_n = w16[k], w16[k + 1], master[k + 2], master[k + 3]
            k += 4
            proj = lambda x, w, i: F.linear(x, w) + F.linear(F.linear(x, lo[i][0]), lo[i][1]) * (16.0 / r)
            n1 = F.rms_norm(x, (D,), ones, 1e-5)
            q = rope(proj(n1, wq, 0).view(1, T, H, hd)).transpose(1, 2)
            kk = rope(proj(n1, wk, 1).view(1, T, G, hd))
            vv = proj(n1, wv, 2).view(1, T, G, hd)
            kk = torch.cat([mk, kk], 1).transpose(1, 2)
            vv = torch.cat([mv, vv], 1).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=1 / math.sqrt(hd), enable_gqa=True)
            a = a.transpose(1, 2) * gate(la_h, H).to(bf)[None, None, :, None]
            x = x + proj(a.reshape(1, T, D), wo, 3)
            n2 = F.rms_norm(x, (D,), ones, 1e-5)
            s = F.silu(proj(n2, wg, 4)) * proj(n2, wu, 5) * gate(la_n, Fd).to(bf)
            x = x + proj(s, wd, 6)
        h = F.rms_norm(x, (D,), ones, 1e-5)[0]
        loss = F.cross_entropy(F.linear(h, embed).float(), targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    print(f"attention backend: {sdpa_backend(H, G, hd, m, T, bf, dev)}", flush=True)
    step()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(args.steps):
        step()
    b.record()
    torch.cuda.synchronize()
    ms = a.elapsed_time(b) / args.steps
    print(f"TORCH_STEP layers={L} seq={T} ms={ms:.1f} tokens_per_s={T / (ms * 1e-3):.0f}", flush=True)


if __name__ == "__main__":
    main()
