"""Tests the emulator test: plants known bugs in cuda/attention_mma.cu (a removed barrier, a missing
copy wait, a fixed fragment layout, an off-by-one mask, ...) and checks that the emulated run of
tests/cuda_emu/attention_mma_emu.cpp FAILS on each; with --simt, the same for cuda/attention.cu and
attention_simt_emu.cpp. Not part of ctest (about a minute, --simt 20 s, per mutation):

    python3 tests/cuda_emu/mutate.py [--simt]            # every mutation
    python3 tests/cuda_emu/mutate.py [--simt] NAME ...   # some
"""
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
simt = "--simt" in sys.argv[1:]
kernel_name, harness = ("attention.cu", "attention_simt_emu.cpp") if simt else ("attention_mma.cu", "attention_mma_emu.cpp")
src = open(os.path.join(root, "cuda", kernel_name)).read()
muts = {
 'dq_no_sync_loop': ('    __syncthreads();  // tile t visible; tile t - 1 (its buffer and every warp\'s dS) consumed\n', '\n'),
 'fwd_no_final_sync': ('  __syncthreads();  // every warp is done with sK/sV: they become the output staging\n', '\n'),
 'dq_no_final_sync': ('  __syncthreads();  // sK/sV become the staging\n', '\n'),
 'fwd_no_q_wait': ('  __pipeline_wait_prior(1);  // Q (the key tile may still be in flight)\n  __syncthreads();\n', '\n'),
 'dq_no_row_sync': ('  __pipeline_wait_prior(1);\n  __syncthreads();  // Q, dO and the row arrays\n', '  __pipeline_wait_prior(1);\n'),

 'fwd_no_syncwarp_after_S': ('    for (int n = 0; n < 4; ++n) wmma::store_matrix_sync(sS + n * 16, s[n], kLS, wmma::mem_row_major);\n    __syncwarp();', '    for (int n = 0; n < 4; ++n) wmma::store_matrix_sync(sS + n * 16, s[n], kLS, wmma::mem_row_major);\n'),
 'identity_coords': ('for (int i = 0; i < kAccElems; ++i) coord[i] = int(f.x[i]);', 'for (int i = 0; i < kAccElems; ++i) coord[i] = (lane * 8 + i) & 255;'),
 'fwd_no_sync_loop': ('    __pipeline_wait_prior(0);  // tile t landed (this thread\'s copies) ...\n    __syncthreads();', '    __pipeline_wait_prior(0);  // tile t landed (this thread\'s copies) ...\n'),
 'fwd_no_wait_loop': ('    __pipeline_wait_prior(0);  // tile t landed (this thread\'s copies) ...\n', '\n'),
 'fwd_no_syncwarp_after_P': ('    if (my_h == 0) sRow[my_r] = corr;\n    __syncwarp();', '    if (my_h == 0) sRow[my_r] = corr;\n'),
 'dq_no_syncwarp_after_dS': ('        sDS[(coord[i] >> 4) * kLP + col] = __float2bfloat16(p * (dp[n].x[i] - d_i[i]));\n      }\n    __syncwarp();', '        sDS[(coord[i] >> 4) * kLP + col] = __float2bfloat16(p * (dp[n].x[i] - d_i[i]));\n      }\n'),
 'dkv_no_sync_top': ('    __syncthreads();  // the previous query tile is consumed\n', '\n'),
 'dkv_no_final_sync': ('  __pipeline_wait_prior(0);\n  __syncthreads();  // sQ/sO become the staging', '  __pipeline_wait_prior(0);\n'),
 'fwd_off_by_one_mask': ('x[4 * j + 0] = kk + 0 < my_nvis', 'x[4 * j + 0] = kk + 0 <= my_nvis'),
 'dkv_pos_begin_plus1': ('pos_begin = p > 0 ? p : 0;', 'pos_begin = p > 0 ? p + 1 : 0;'),
}
simt_muts = {
 'fwd_no_sync_top': ('    __syncthreads();  // the previous tile is consumed (and sQ is loaded, the first time)\n', '\n'),
 'fwd_no_sync_loaded': ('    load_keys<T, HD>(a, vr, vm, b, g, kk0, kKeyTile, total, sV, HD);\n    __syncthreads();\n',
                        '    load_keys<T, HD>(a, vr, vm, b, g, kk0, kKeyTile, total, sV, HD);\n'),
 'fwd_off_by_one_mask': ('float si = kk < nvis[i] ?', 'float si = kk <= nvis[i] ?'),
 'fwd_no_warp_max': ('fmaxf(m_run[i], warp_max(si))', 'fmaxf(m_run[i], si)'),
 'fwd_shfl_own_lane': ('const float pj = __shfl_sync(0xffffffffu, s[i], j);', 'const float pj = __shfl_sync(0xffffffffu, s[i], lane);'),
 'fwd_shfl_next_lane': ('const float pj = __shfl_sync(0xffffffffu, s[i], j);', 'const float pj = __shfl_sync(0xffffffffu, s[i], (j + 1) & 31);'),
 'dsum_no_warp_sum': ('  s = warp_sum(s);\n', '\n'),
 'dq_no_sync_top': ('    __syncthreads();\n    load_keys<T, HD>(a, kr, km, b, g, kk0, kKeyTile, total, sK, KS);\n    load_keys<T, HD>(a, vr, vm, b, g, kk0, kKeyTile, total, sV, KS);',
                    '    load_keys<T, HD>(a, kr, km, b, g, kk0, kKeyTile, total, sK, KS);\n    load_keys<T, HD>(a, vr, vm, b, g, kk0, kKeyTile, total, sV, KS);'),
 'dkv_no_sync_top': ('    __syncthreads();  // previous query tile consumed (and sK/sV loaded, the first time)\n', '\n'),
 'dkv_no_sync_rows': ('        sN[threadIdx.x] = 0;\n      }\n    }\n    __syncthreads();\n', '        sN[threadIdx.x] = 0;\n      }\n    }\n'),
 'dkv_pos_begin_plus1': ('pos_begin = p > 0 ? p : 0;', 'pos_begin = p > 0 ? p + 1 : 0;'),
 'dkv_smem_short': ('sizeof(int64_t) * kQueryTile + 8;', 'sizeof(int64_t) * (kQueryTile - 1);'),
 # the memory gate
 'fwd_gate_ignored': ('      if (kk < a.MG) si += lg;', ''),
 'dq_gate_ignored': ('kk < a.MG ? expf((s[i] * a.scale + lg) - lse[i])', 'kk < a.MG ? expf(s[i] * a.scale - lse[i])'),
 'dkv_dgate_gated_prob': ('const float u = vis ? expf(p[i] * a.scale - l) : 0.0f;',
                          'const float u = vis ? expf((p[i] * a.scale + lg) - l) : 0.0f;'),
 'dkv_dgate_no_warp_sum': ('const float gsum = warp_sum(dgate[i]);', 'const float gsum = dgate[i];'),
}
if simt:
    muts = simt_muts


def survives(name, work):
    a, b = muts[name]
    assert src.count(a) == 1, (name, src.count(a))
    kernel = os.path.join(work, name + ".cu")  # includes "cuda/common.cuh": found through -I root
    open(kernel, "w").write(src.replace(a, b))
    exe = os.path.join(work, name)
    subprocess.run(["g++", "-std=c++20", "-O1", "-fno-strict-aliasing", "-w", f'-DKERNEL_FILE="{kernel}"',
                    "-I", os.path.join(here, "emu"), "-I", root, os.path.join(here, harness),
                    "-o", exe, "-lfmt"], check=True)
    r = subprocess.run([exe], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    return r.returncode == 0


names = [a for a in sys.argv[1:] if a != "--simt"] or list(muts)
with tempfile.TemporaryDirectory() as work:
    survivors = [n for n in names if survives(n, work)]
for n in names:
    print(f"{n:28s} {'SURVIVED' if n in survivors else 'caught'}")
sys.exit(1 if survivors else 0)
