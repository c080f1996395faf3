// The tensor-core attention of cuda/attention_mma.cu, run WITHOUT a GPU: the real kernel source is
// compiled as C++ against stand-in CUDA headers (tests/cuda_emu/emu/) and executed on a CPU emulator
// of CUDA blocks, then compared with a double-precision reference (forward out/lse, every gradient,
// bf16 tolerance 1e-2; guard bands catch writes outside the outputs). The reference and the checks are
// shared with attention_simt_emu.cpp (attention_reference.h).
//
// The emulator (emu/emu_core.h) runs one ucontext fiber per thread and switches only at barriers and
// warp collectives, in a random order each time, so a missing __syncthreads/__syncwarp shows up; WMMA
// fragments (emu/mma.h) use scrambled element layouts, so code that assumes a layout fails; alignment
// and ldm rules are checked; cp.async copies (emu/cuda_pipeline.h) complete at issue, at the wait, or
// at random (the three modes each case runs in); shared memory starts as NaN. It cannot model the
// real scheduler, memory model or speed: those need a GPU (bench/gpu_check.sh).
// tests/cuda_emu/mutate.py plants known bugs in the kernel and checks that this test catches them.
//
//   koff_cuda_emu_attention [case]      (ctest: cuda_emu_attention)
#include <cuda_bf16.h>
#include <cuda_pipeline.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace koff::cuda {
namespace {
alignas(1024) unsigned char smem[emu::kSmemArena];
}
}  // namespace koff::cuda

#ifndef KERNEL_FILE
#error "define KERNEL_FILE, the path of cuda/attention_mma.cu (tests/CMakeLists.txt does)"
#endif
#include KERNEL_FILE

#include "attention_reference.h"

namespace emu {
void launch_grid(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  run_grid(grid, block, smem_bytes, koff::cuda::smem, kSmemArena, body);
}
}  // namespace emu

using koff::cuda::AttentionShape;
using bf = __nv_bfloat16;

// A device-like buffer with NaN guards on both sides.
struct Buf {
  static constexpr size_t kGuard = 256;
  std::vector<bf> v;
  size_t n;
  explicit Buf(size_t n_) : v(n_ + 2 * kGuard, bf{0xffff}), n(n_) {}
  bf* p() { return v.data() + kGuard; }
  bool guards_ok() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (v[i].bits != 0xffff || v[kGuard + n + i].bits != 0xffff) return false;
    return true;
  }
  double at(size_t i) const { return __bfloat162float(v[kGuard + i]); }
};
struct FBuf {
  static constexpr size_t kGuard = 64;
  std::vector<float> v;
  size_t n;
  explicit FBuf(size_t n_) : v(n_ + 2 * kGuard, NAN), n(n_) {}
  float* p() { return v.data() + kGuard; }
  bool guards_ok() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (!std::isnan(v[i]) || !std::isnan(v[kGuard + n + i])) return false;
    return true;
  }
};

using ref::Case;

std::vector<double> vec(const Buf& x) {
  std::vector<double> r(x.n);
  for (size_t i = 0; i < x.n; ++i) r[i] = x.at(i);
  return r;
}

void run(const Case& c, int copy_mode) {
  emu::st.copy_mode = copy_mode;
  const ref::Shape s(c);
  const size_t nq = s.nq(), nk = s.nk(), nm = s.nm();
  const int64_t M = c.m;
  const double scale = 1.0 / std::sqrt(double(c.hd));
  char tag[200];
  std::snprintf(tag, sizeof tag, "B%ld Tq%ld Tk%ld H%ld G%ld m%ld hd%ld %s copy%d", long(c.b), long(c.tq), long(c.tk),
                long(c.h), long(c.g), long(M), long(c.hd), c.causal ? "causal" : "full", copy_mode);
  std::printf("%s\n", tag);
  uint64_t seed = uint64_t(c.tq * 131 + c.tk * 7 + c.h * 3 + M + c.hd);
  ref::Inputs in{c, {}, {}, {}, {}, {}, {}};
  auto fill = [&](Buf& x, std::vector<double>& seen, double amp) {
    for (size_t i = 0; i < x.n; ++i) x.p()[i] = __float2bfloat16(float(amp * ref::rnd(seed)));
    seen = vec(x);
  };
  Buf q(nq), k(nk), v(nk), mk(nm), mv(nm), dout(nq);
  fill(q, in.q, 2.0), fill(k, in.k, 2.0), fill(v, in.v, 1.0), fill(mk, in.mk, 2.0), fill(mv, in.mv, 1.0);
  fill(dout, in.dout, 1.0);
  std::vector<double> out_ref, lse_ref;
  ref::forward(in, scale, out_ref, lse_ref);
  const AttentionShape shape{c.b, c.tq, c.tk, c.h, c.g, M, c.hd};
  Buf out(nq);
  FBuf lse(s.rows());
  if (!koff::cuda::attention_use_mma(koff::cuda::Dt::bf16, shape, {q.p(), k.p(), v.p(), out.p()})) {
    std::printf("  not eligible\n");
    ++ref::failures;
    return;
  }
  koff::cuda::attention_forward_mma(q.p(), k.p(), v.p(), M ? mk.p() : nullptr, M ? mv.p() : nullptr, out.p(), lse.p(),
                                    shape, float(scale), c.causal, nullptr);
  ref::check("out", vec(out), out_ref, 1e-2);
  ref::check_lse(std::vector<double>(lse.p(), lse.p() + lse.n), lse_ref, 1e-2);
  if (!out.guards_ok() || !lse.guards_ok()) {
    std::printf("  forward wrote outside its outputs  <-- FAIL\n");
    ++ref::failures;
  }

  // Reference backward, from the reference out (rounded to bf16, as the kernel sees it) and lse.
  Buf outb(nq);
  for (size_t i = 0; i < nq; ++i) outb.p()[i] = __float2bfloat16(float(out_ref[i]));
  FBuf lsef(lse.n);
  for (size_t i = 0; i < lse.n; ++i) lsef.p()[i] = float(lse_ref[i]);
  const ref::Grads want = ref::backward(in, vec(outb), std::vector<double>(lsef.p(), lsef.p() + lsef.n), scale);
  Buf dq(nq), dk(nk), dv(nk), dmk(nm), dmv(nm);
  FBuf dsum(lse.n);
  koff::cuda::attention_backward_mma(dout.p(), q.p(), k.p(), v.p(), M ? mk.p() : nullptr, M ? mv.p() : nullptr,
                                     outb.p(), lsef.p(), dsum.p(), dq.p(), dk.p(), dv.p(), M ? dmk.p() : nullptr,
                                     M ? dmv.p() : nullptr, shape, float(scale), c.causal, nullptr);
  ref::check("dq", vec(dq), want.dq, 1e-2);
  ref::check("dk", vec(dk), want.dk, 1e-2);
  ref::check("dv", vec(dv), want.dv, 1e-2);
  if (M) {
    ref::check("dmem_k", vec(dmk), want.dmk, 1e-2);
    ref::check("dmem_v", vec(dmv), want.dmv, 1e-2);
  }
  if (!dq.guards_ok() || !dk.guards_ok() || !dv.guards_ok() || !dmk.guards_ok() || !dmv.guards_ok() ||
      !dsum.guards_ok()) {
    std::printf("  backward wrote outside its outputs  <-- FAIL\n");
    ++ref::failures;
  }
}

int main(int argc, char** argv) {
  std::vector<Case> cases = {
      {1, 77, 77, 4, 2, 5, 64, true},     // odd T, GQA 2, memory
      {1, 5, 40, 3, 1, 16, 128, true},    // decode-like Tq < Tk
      {1, 1, 40, 3, 1, 16, 128, true},    // decode step
      {2, 70, 70, 4, 1, 0, 64, false},    // non-causal, m = 0, B = 2
      {1, 20, 8, 2, 1, 0, 64, true},      // Tq > Tk: rows that see nothing
      {1, 9, 9, 24, 1, 3, 64, true},      // 24 heads per KV head
      {1, 3, 3, 64, 1, 0, 64, true},      // 64 heads per KV head: one position per block
      {1, 10, 10, 2, 1, 70, 64, true},    // memory slots spanning two key tiles
      {1, 4, 0, 2, 1, 5, 64, true},       // no real keys: memory only
      {1, 3, 0, 2, 1, 0, 64, true},       // nothing at all
      {2, 130, 130, 6, 2, 16, 128, true}, // several tiles at hd 128
  };
  int first = 0, last = int(cases.size());
  if (argc > 1) first = std::atoi(argv[1]), last = first + 1;
  for (int i = first; i < last; ++i)
    for (int mode : {0, 1, 2}) run(cases[size_t(i)], mode);
  std::printf("%s: %d failures, %ld launches\n", ref::failures ? "FAILED" : "PASSED", ref::failures, emu::launches);
  return ref::failures ? 1 : 0;
}
