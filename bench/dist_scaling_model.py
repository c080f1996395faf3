# The scaling model of bench/RESULTS.md "Data parallelism: tests and expected scaling": data-parallel efficiency of koff's mask learning on
# H100/H200 nodes, from the step's compute time, the trainables' gradient bytes and the link bandwidths.
# Every assumption is a named constant; replace STEP_S with a measured step time when a GPU run exists.
import math

D, R, SLOTS = 6, 8, 16             # domains, LoRA rank, KV slots (method defaults, 6 languages)
MODELS = {  # hidden, intermediate, layers, heads, kv heads, head dim, vocab, parameters
    "Llama-3.2-3B": (3072, 8192, 28, 24, 8, 128, 128256, 3.21e9),
    "Llama-3.1-8B": (4096, 14336, 32, 32, 8, 128, 128256, 8.03e9),
}
TOKENS_PER_GPU = 8 * 2048          # per step: 8 sequences of 2048
PEAK, MFU = 989e12, 0.40           # H100 SXM dense bf16, assumed achieved fraction
NVL_BUSBW = 360e9                  # NCCL all-reduce bus bandwidth inside a node (NVLink 4; nccl-tests 360-480)
NIC_BW = 40e9                      # per GPU between nodes: one 400 Gb/s NDR NIC per GPU, ~80% achieved
LAT_NODE, LAT_MULTI = 15e-6, 60e-6 # per all-reduce call: latency inside a node, across 4 nodes
BUCKET = 32 * 2**20                # the chosen bucket size
BACKWARD_SHARE = 2 / 3             # the backward is ~2/3 of the step; buckets overlap it

def trainables(h, f, L, H, G, hd, V, N):
    q, kv = H * hd, G * hd
    lora = R * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + f) + (f + h))   # q k v o gate up down
    return L * D * (lora + 2 * SLOTS * G * hd) + L * (H + f) + 2          # + gates + lambdas

def step_time(h, f, L, H, G, hd, V, N):
    per_token = 4 * N + 6 * L * 2048 * H * hd       # fwd 2N + bwd (activation grads only) 2N; causal attention
    return per_token * TOKENS_PER_GPU / (PEAK * MFU)

def comm_time(nbytes, nodes):
    """Hierarchical all-reduce: reduce-scatter + all-gather over NVLink, all-reduce of 1/8 over the NICs."""
    t = 2 * 7 / 8 * nbytes / NVL_BUSBW
    if nodes > 1:
        t += 2 * (nodes - 1) / nodes * (nbytes / 8) / NIC_BW
    return t

def report(tokens_per_gpu):
    global TOKENS_PER_GPU
    TOKENS_PER_GPU = tokens_per_gpu
    for name, cfg in MODELS.items():
        n = trainables(*cfg)
        S = 4 * n                                   # f32 gradients
        T = step_time(*cfg)
        nb = math.ceil(S / BUCKET)
        print(f"{name}: {n/1e6:.1f} M trainables = {S/1e6:.0f} MB of f32 gradient, step {T*1e3:.0f} ms "
              f"({TOKENS_PER_GPU} tokens/GPU at {MFU:.0%} MFU), {nb} buckets of 32 MiB")
        for nodes in (1, 4):
            lat = LAT_NODE if nodes == 1 else LAT_MULTI
            total = comm_time(S, nodes) + nb * lat
            last = comm_time(min(S, BUCKET), nodes) + lat          # the bucket that finishes after the backward
            hidden_window = BACKWARD_SHARE * T
            exposed = last + max(0.0, total - last - hidden_window) + lat   # + the loss/stop all-reduce
            eff_overlap = T / (T + exposed)
            eff_none = T / (T + total + lat)
            print(f"  {nodes} node(s) x 8 GPUs: all-reduce {total*1e3:.2f} ms in total, exposed {exposed*1e3:.2f} ms: "
                  f"efficiency {eff_overlap:.2%} with overlap ({eff_none:.2%} if nothing overlapped)")

report(8 * 2048)   # 8 sequences of 2048 per GPU and step
print('-- one sequence of 2048 per GPU (a small global batch spread thin) --')
report(2048)

# The bucket size: the smallest whose bandwidth time is >= 9x the call latency inside a node (90% of
# bus bandwidth), and the exposed last bucket stays under 0.2% of a step.
for lat, where, per_byte in ((LAT_NODE, "in a node", 2 * 7 / 8 / NVL_BUSBW),
                             (LAT_MULTI, "over 4 nodes", 2 * 7 / 8 / NVL_BUSBW + 2 * 3 / 4 / 8 / NIC_BW)):
    b = 9 * lat / per_byte
    print(f"bucket for 90% of bandwidth {where}: >= {b/2**20:.0f} MiB; 32 MiB reaches "
          f"{(BUCKET*per_byte)/(BUCKET*per_byte+lat):.0%}")
