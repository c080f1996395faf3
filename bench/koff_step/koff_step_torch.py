#!/usr/bin/env python3
"""The KOFF training step of `koff offload` (engine/koff/trainer.cpp) in PyTorch eager, CPU, f32.

Same work per step as OffloadTrainer::train_step (mask-learning phase, one micro-batch, one process):
  - B sequences of T tokens, sequence j of step s belonging to domain (s*B + j) mod D (its own memory)
  - one hard-concrete sample z of every head and neuron gate per step (beta 2/3, gamma -0.1, zeta 1.1,
    u clamped to [1e-6, 1 - 1e-6]), z_head multiplying each head's attention output before o_proj,
    z_neuron multiplying silu(gate) * up before down_proj
  - per-domain LoRA (rank r, alpha) on q k v o gate up down, gathered per sequence from [D, r*in] /
    [D, out*r] tables (the gather's backward scatter-adds into the table), alpha/r scaling B_d
  - per-domain KV memory: m slots per layer and KV head from [D, m*G*hd] tables, prepended to the
    post-RoPE keys/values, seen by every query (no position), causal over the real tokens;
    F.scaled_dot_product_attention with an explicit [T, m+T] boolean mask and enable_gqa
  - frozen base model: RMSNorm, RoPE (rotate_half), GQA attention, SwiGLU MLP, tied or untied head
  - loss: summed token cross-entropy / (B*T)  (koff's normaliser, accum 1); backward
  - sparsity control (koff's --sparsity-control; lagrangian by default here, see README.md):
      lagrangian: N (lambda1 (s_hat - t) + mu (s_hat - t)^2) backpropagated into log_alpha, s_hat with
                  the exact GQA group term, t on koff's ramp; after the optimiser step lambda1 +=
                  lr_lambda (s_hat_before - t) (plain SGD ascent) and log_alpha clamped to +-4.6
      project:    after the optimiser step, the one shift b (bisection in double) that puts s_hat on t
      decision term (--decide, koff default 1e-3): added to the gates' gradient after the ramp's end
  - AdamW, no weight decay, betas (0.9, 0.999), eps 1e-8: group "gates" lr 0.5 (log_alpha), group
    "memory" lr 1e-3 with koff's linear warmup + cosine scale (LoRA A/B and KV tables)
  - after the step, the gate figures koff logs every step (s_hat, hard sparsity, undecided)

Prints a few `#` lines (config, SDPA backend) then ONE JSON line with tokens_per_s over the timed
steps (the first --warmup steps excluded) and peak_rss_kb (ru_maxrss of this fresh process).

Model: --model DIR (config.json, and its model.safetensors unless --random) or --preset smollm2
(SmolLM2-135M's config, random weights: the speed does not depend on the values).
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

RSS_AFTER_IMPORT_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the library alone (CUDA builds: ~0.5 GB)

BETA, GAMMA, ZETA, EPS_U = 2.0 / 3.0, -0.1, 1.1, 1e-6
CENTER = BETA * math.log(-GAMMA / ZETA)  # p_open = sigmoid(log_alpha - CENTER)
ZERO_BELOW = math.log(-GAMMA / ZETA)      # z_det = 0 when log_alpha <= this

SMOLLM2_135M = {  # HuggingFaceTB/SmolLM2-135M(-Instruct) config.json, the fields that shape the step
    "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
}


def load_config(args):
    if args.preset == "smollm2":
        cfg = dict(SMOLLM2_135M)
    else:
        with open(os.path.join(args.model, "config.json")) as f:
            cfg = json.load(f)
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("tie_word_embeddings", False)
    cfg.setdefault("rms_norm_eps", 1e-6)
    cfg.setdefault("rope_theta", 10000.0)
    for k in ("attention_bias", "mlp_bias"):
        if cfg.get(k):
            sys.exit(f"koff_step_torch.py: {k} models are not covered by this peer")
    if cfg.get("rope_scaling"):
        print("# note: rope_scaling ignored (cos/sin tables are precomputed: no effect on the step's cost)")
    return cfg


def base_weights(cfg, args):
    """Frozen weights, HF names. From the model directory's safetensors, else random N(0, 0.02)."""
    d, hd, H, G, Fd, V = (cfg["hidden_size"], cfg["head_dim"], cfg["num_attention_heads"],
                          cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"])
    shapes = {"model.embed_tokens.weight": (V, d), "model.norm.weight": (d,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, d)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (H * hd, d), p + "self_attn.k_proj.weight": (G * hd, d),
                       p + "self_attn.v_proj.weight": (G * hd, d), p + "self_attn.o_proj.weight": (d, H * hd),
                       p + "mlp.gate_proj.weight": (Fd, d), p + "mlp.up_proj.weight": (Fd, d),
                       p + "mlp.down_proj.weight": (d, Fd)})
    st = None if args.random or args.preset else os.path.join(args.model, "model.safetensors")
    if st and os.path.exists(st):
        from safetensors.torch import load_file
        w = {k: v.float().contiguous() for k, v in load_file(st).items() if k in shapes}
        missing = [k for k in shapes if k not in w]
        if missing:
            sys.exit(f"koff_step_torch.py: {st} lacks {missing[:3]}")
        print(f"# weights: {st}")
        return w
    g = torch.Generator().manual_seed(0)
    w = {}
    for k, s in shapes.items():
        w[k] = torch.ones(s) if "norm" in k else torch.randn(s, generator=g) * 0.02
    print("# weights: random N(0, 0.02) (norms 1)")
    return w


def sdpa_choice(q, k, mask, scale):
    """The SDPA backend PyTorch's dispatcher picks for this exact call (as _fused_sdp_choice reports)."""
    from torch.nn.attention import SDPBackend
    try:
        i = torch._fused_sdp_choice(q, k, k, mask, 0.0, False, scale=scale, enable_gqa=True)
        for name, b in SDPBackend.__members__.items():
            if int(b) == int(i):
                return name
        return f"backend #{i}"
    except Exception as e:  # private API: report rather than fail
        return f"unknown ({type(e).__name__}: {e})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/embedded", help="HF model directory (config.json [+ model.safetensors])")
    ap.add_argument("--preset", choices=["smollm2"], help="SmolLM2-135M's shape with random weights (no --model)")
    ap.add_argument("--random", action="store_true", help="random weights even where the directory has some")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--domains", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8, help="steps in all (warm-up included); koff's --steps")
    ap.add_argument("--warmup", type=int, default=1, help="first steps excluded from the timing")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave PyTorch's default)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--target", type=float, default=0.12)
    ap.add_argument("--control", choices=["lagrangian", "project"], default="lagrangian")
    ap.add_argument("--warmup-frac", type=float, default=0.2)
    ap.add_argument("--penalty", type=float, default=10.0)
    ap.add_argument("--lr-lambda", type=float, default=0.1)
    ap.add_argument("--decide", type=float, default=1e-3)
    ap.add_argument("--lr-gates", type=float, default=0.5)
    ap.add_argument("--lr-memory", type=float, default=1e-3)
    ap.add_argument("--memory-warmup-frac", type=float, default=0.05)
    ap.add_argument("--adamw", choices=["fused", "foreach", "loop"], default="fused",
                    help="torch.optim.AdamW implementation (fused: one CPU kernel per group)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args)
    L, d, H, G, hd = (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"],
                      cfg["num_key_value_heads"], cfg["head_dim"])
    Fd, V, eps = cfg["intermediate_size"], cfg["vocab_size"], cfg["rms_norm_eps"]
    B, T, D, r, m = args.batch, args.seq, args.domains, args.rank, args.slots
    W = base_weights(cfg, args)
    embed = W["model.embed_tokens.weight"]
    lm_head = embed if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    final_norm = W["model.norm.weight"]
    layers = []
    for l in range(L):
        p = f"model.layers.{l}."
        layers.append({k: W[p + n] for k, n in (
            ("in_norm", "input_layernorm.weight"), ("post_norm", "post_attention_layernorm.weight"),
            ("q", "self_attn.q_proj.weight"), ("k", "self_attn.k_proj.weight"), ("v", "self_attn.v_proj.weight"),
            ("o", "self_attn.o_proj.weight"), ("gate", "mlp.gate_proj.weight"), ("up", "mlp.up_proj.weight"),
            ("down", "mlp.down_proj.weight"))})

    # --- trainables (engine/koff/gates.cpp, memory.cpp): f32 ---
    projs = ["q", "k", "v", "o", "gate", "up", "down"]
    la_heads = [torch.full((H,), 3.0, requires_grad=True) for _ in range(L)]
    la_neurons = [torch.full((Fd,), 3.0, requires_grad=True) for _ in range(L)]
    lora, kv = [], []
    for l in range(L):
        t = {}
        for pn in projs:
            out_f, in_f = layers[l][pn].shape
            bound = 1.0 / math.sqrt(in_f)
            t[pn] = (torch.empty(D, r * in_f).uniform_(-bound, bound).requires_grad_(),
                     torch.zeros(D, out_f * r, requires_grad=True), in_f, out_f)
        lora.append(t)
        kv.append((torch.randn(D, m * G * hd).mul_(0.02).requires_grad_(),
                   torch.randn(D, m * G * hd).mul_(0.02).requires_grad_()))
    gate_params = la_heads + la_neurons
    mem_params = [x for t in lora for pn in projs for x in t[pn][:2]] + [x for pair in kv for x in pair]
    opt_kw = {"fused": True} if args.adamw == "fused" else {"foreach": args.adamw == "foreach"}
    opt = torch.optim.AdamW([{"params": gate_params, "lr": args.lr_gates},
                             {"params": mem_params, "lr": args.lr_memory}],
                            betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **opt_kw)

    # --- unit costs and the control's schedule (gates.cpp unit_costs, sparsity_control.cpp) ---
    c_head, c_group, c_neuron = 2 * d * hd, 2 * d * hd, 3 * d
    prunable = L * (H * c_head + G * c_group + Fd * c_neuron)
    n_gates = L * (H + Fd)
    rep = H // G
    ramp = max(1.0, args.warmup_frac * args.steps)
    if args.control == "lagrangian":
        ramp = max(1.0, max(args.warmup_frac * args.steps, 60.0))
    target_at = lambda s: args.target * min(1.0, s / ramp)

    def decide_weight(s):
        last = max(args.steps - 1, 1)
        if args.decide <= 0 or s < ramp or last <= ramp:
            return 0.0
        return args.decide * min(1.0, (s - ramp) / (last - ramp))

    def memory_lr_scale(s):
        warm = max(1, int(args.memory_warmup_frac * args.steps))
        if s < warm:
            return (s + 1) / warm
        progress = (s - warm) / max(args.steps - warm, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def expected_kept_share(heads, neurons):  # lists of per-layer log_alpha (any dtype), differentiable
        kept = 0.0
        for lh, ln in zip(heads, neurons):
            ph, pn = torch.sigmoid(lh - CENTER), torch.sigmoid(ln - CENTER)
            all_closed = (1 - ph).view(G, rep).prod(dim=1)
            kept = kept + (ph.sum() * c_head + (1 - all_closed).sum() * c_group + pn.sum() * c_neuron)
        return kept / prunable

    def gate_figures():  # what the trainer logs after every step (double precision, on the host)
        with torch.no_grad():
            hs = [x.double() for x in la_heads]
            ns = [x.double() for x in la_neurons]
            s_hat = 1 - float(expected_kept_share(hs, ns))
            hard = und = 0.0
            for lh, ln in zip(hs, ns):
                ph, pn = torch.sigmoid(lh - CENTER), torch.sigmoid(ln - CENTER)
                zh = (lh <= ZERO_BELOW)
                hard += float(zh.sum()) * c_head + float(zh.view(G, rep).all(dim=1).sum()) * c_group
                hard += float((ln <= ZERO_BELOW).sum()) * c_neuron
                pg = 1 - (1 - ph).view(G, rep).prod(dim=1)
                oq = lambda p: ((p > 0.1) & (p < 0.9)).sum()
                und += float(oq(ph)) * c_head + float(oq(pg)) * c_group + float(oq(pn)) * c_neuron
            return s_hat, hard / prunable, und / prunable

    def project(t, clamp=4.6):  # sparsity_control.cpp project_to_target, vectorised, double
        with torch.no_grad():
            hs = [x.double() for x in la_heads]
            ns = [x.double() for x in la_neurons]
            allv = torch.cat(hs + ns)
            lo, hi = -clamp - float(allv.max()), clamp - float(allv.min())
            for _ in range(200):
                if hi - lo <= 1e-10:
                    break
                mid = 0.5 * (lo + hi)
                s = 1 - float(expected_kept_share([(x + mid).clamp(-clamp, clamp) for x in hs],
                                                  [(x + mid).clamp(-clamp, clamp) for x in ns]))
                if s > t:
                    lo = mid
                else:
                    hi = mid
            b = 0.5 * (lo + hi)
            for x in la_heads + la_neurons:
                x.add_(b).clamp_(-clamp, clamp)
            return b

    def add_decision_gradient(rho):
        with torch.no_grad():
            for group, cost in ((la_heads, c_head), (la_neurons, c_neuron)):
                w = rho * n_gates * cost / prunable
                for x in group:
                    la = x.double()
                    p = torch.sigmoid(la - CENTER)
                    g = (-w * p * (1 - p) * (la - CENTER)).float()
                    x.grad = g if x.grad is None else x.grad + g

    # --- RoPE tables, mask, data ---
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
    cos = torch.cat([ang.cos(), ang.cos()], -1).float()[None, :, None, :]  # [1, T, 1, hd]
    sin = torch.cat([ang.sin(), ang.sin()], -1).float()[None, :, None, :]
    mask = torch.ones(T, m + T, dtype=torch.bool)
    mask[:, m:] = torch.ones(T, T, dtype=torch.bool).tril()
    scale = 1.0 / math.sqrt(hd)
    # Each domain's token stream: synthetic ids (the step's cost does not depend on their values).
    data_gen = torch.Generator().manual_seed(1)
    streams = [torch.randint(0, V, (max(8 * T, 4096),), generator=data_gen) for _ in range(D)]

    def rope(x):  # x [B, T, n, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def batch(step):
        ids, tgt, dom = torch.empty(B, T, dtype=torch.long), torch.empty(B, T, dtype=torch.long), []
        for j in range(B):
            dj = (step * B + j) % D
            s = streams[dj]
            start = int(torch.randint(0, s.numel() - T - 1, (1,), generator=data_gen))
            ids[j], tgt[j] = s[start:start + T], s[start + 1:start + T + 1]
            dom.append(dj)
        return ids, tgt, torch.tensor(dom, dtype=torch.long)

    lora_scale = args.alpha / r
    state = {"lambda1": 0.0}

    def step(s):
        t = target_at(s)
        ids, tgt, dom = batch(s)
        # One gate sample for the step: every layer's uniforms drawn at once, as koff does.
        u = torch.rand(L * (H + Fd)).clamp_(EPS_U, 1 - EPS_U)
        logit_u = (u.log() - torch.log1p(-u)).view(L, H + Fd)

        def hc(la, lu):
            z = torch.sigmoid((lu + la) / BETA)
            return (z * (ZETA - GAMMA) + GAMMA).clamp(0, 1)

        x = F.embedding(ids, embed)
        for l in range(L):
            w = layers[l]
            tl, (kt, vt) = lora[l], kv[l]
            z_h = hc(la_heads[l], logit_u[l, :H])
            z_n = hc(la_neurons[l], logit_u[l, H:])

            def proj(inp, pn):
                a_t, b_t, in_f, out_f = tl[pn]
                a = a_t[dom].view(B, r, in_f)
                b = b_t[dom].view(B, out_f, r) * lora_scale
                return F.linear(inp, w[pn]) + torch.matmul(torch.matmul(inp, a.transpose(1, 2)), b.transpose(1, 2))

            n1 = F.rms_norm(x, (d,), w["in_norm"], eps)
            q = rope(proj(n1, "q").view(B, T, H, hd)).transpose(1, 2)
            k = rope(proj(n1, "k").view(B, T, G, hd))
            v = proj(n1, "v").view(B, T, G, hd)
            k = torch.cat([kt[dom].view(B, m, G, hd), k], 1).transpose(1, 2)
            v = torch.cat([vt[dom].view(B, m, G, hd), v], 1).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
            a = a.transpose(1, 2) * z_h[None, None, :, None]
            x = x + proj(a.reshape(B, T, H * hd), "o")
            n2 = F.rms_norm(x, (d,), w["post_norm"], eps)
            x = x + proj(F.silu(proj(n2, "gate")) * proj(n2, "up") * z_n, "down")
        h = F.rms_norm(x, (d,), final_norm, eps).reshape(B * T, d)
        loss = F.cross_entropy(F.linear(h, lm_head), tgt.reshape(-1), reduction="sum") / (B * T)
        loss_value = loss.item()
        loss.backward()
        # Sparsity control around the optimiser step (SparsityController::begin_step / end_step).
        rho = decide_weight(s)
        if rho > 0:
            add_decision_gradient(rho)
        if args.control == "lagrangian":
            s_hat = 1 - expected_kept_share(la_heads, la_neurons)
            s_hat_before = s_hat.item()
            diff = s_hat - t
            (diff * (n_gates * state["lambda1"]) + diff * diff * (n_gates * args.penalty)).backward()
        opt.param_groups[1]["lr"] = args.lr_memory * memory_lr_scale(s)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.control == "lagrangian":
            state["lambda1"] += args.lr_lambda * (s_hat_before - t)
            with torch.no_grad():
                for p in gate_params:
                    p.clamp_(-4.6, 4.6)
        else:
            project(t)
        gate_figures()
        return loss_value

    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, AdamW {args.adamw}, control {args.control}; "
          f"L {L} d {d} H {H} G {G} hd {hd} F {Fd} V {V} tied {cfg['tie_word_embeddings']}; B {B} T {T} D {D} "
          f"r {r} alpha {args.alpha} m {m}", flush=True)
    q0, k0 = torch.zeros(B, H, T, hd), torch.zeros(B, G, m + T, hd)
    print(f"# SDPA backend for q {tuple(q0.shape)}, k/v {tuple(k0.shape)}, bool mask [T, m+T], enable_gqa: "
          f"{sdpa_choice(q0, k0, mask, scale)}", flush=True)
    times = []
    for s in range(args.steps):
        t0 = time.perf_counter()
        loss = step(s)
        times.append(time.perf_counter() - t0)
        print(f"# step {s + 1}/{args.steps} loss {loss:.4f} {times[-1] * 1e3:.0f} ms", flush=True)
    timed = times[args.warmup:]
    tok = B * T
    print(json.dumps({"engine": "pytorch " + torch.__version__, "threads": torch.get_num_threads(), "batch": B,
                      "seq": T, "tokens_per_step": tok, "steps": args.steps, "warmup": args.warmup,
                      "tokens_per_s": tok * len(timed) / sum(timed) if timed else float("nan"),
                      "step_ms": [round(x * 1e3, 1) for x in times],
                      "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "rss_after_import_kb": RSS_AFTER_IMPORT_KB}), flush=True)


if __name__ == "__main__":
    main()
