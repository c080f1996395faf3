// The CUDA-core (SIMT) attention of cuda/attention.cu, run WITHOUT a GPU on the same CPU emulator of
// CUDA blocks as attention_mma_emu.cpp (emu/emu_core.h: one fiber per thread, random warp order and
// stalls, switches at barriers and warp collectives; shuffles read the other lanes' values at the
// collective; dynamic shared memory starts as NaN and must stay within the launch's size). The real
// kernel source is compiled as C++ against the stand-in CUDA headers and its public launchers,
// koff::cuda::attention_forward / attention_backward, are checked for f32 (relative error 1e-5) and
// bf16 (1e-2) I/O against a double-precision reference (attention_reference.h); guard bands around
// every output catch writes outside it. The SIMT path serves f32, and bf16 at head dims other than
// 64/128 (or with KOFF_CUDA_ATTENTION=simt), so the cases include head dims 32, 80 and 192. Every case
// with memory slots runs again with a memory gate [B, G] (one gate exactly 0, the others in [0.2, 1.5]):
// the SIMT kernels serve every gated call, and dmem_gate is checked against the reference too.
//
//   koff_cuda_emu_attention_simt [case]      (ctest: cuda_emu_attention_simt)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

namespace koff::cuda {
namespace {
// The kernels' `extern __shared__ float smem[]` names this array.
alignas(1024) float smem[emu::kSmemArena / sizeof(float)];
}  // namespace
}  // namespace koff::cuda

#ifndef KERNEL_FILE
#error "define KERNEL_FILE, the path of cuda/attention.cu (tests/CMakeLists.txt does)"
#endif
#include KERNEL_FILE

#include "attention_reference.h"

namespace emu {
void launch_grid(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  run_grid(grid, block, smem_bytes, reinterpret_cast<unsigned char*>(koff::cuda::smem), kSmemArena, body);
}
}  // namespace emu

using bf = __nv_bfloat16;
using koff::cuda::AttentionShape;
using koff::cuda::Dt;

template <typename E>
double to_double(E x) {
  if constexpr (std::is_same_v<E, float>)
    return x;
  else
    return __bfloat162float(x);
}
template <typename E>
E from_double(double x) {
  if constexpr (std::is_same_v<E, float>)
    return float(x);
  else
    return __float2bfloat16(float(x));
}
template <typename E>
bool is_guard(E x) {
  if constexpr (std::is_same_v<E, float>) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u == 0xffffffffu;
  } else {
    return x.bits == 0xffff;
  }
}

// A device-like buffer with NaN guards (all bits set) on both sides.
template <typename E>
struct Buf {
  static constexpr size_t kGuard = 256;
  std::vector<E> v;
  size_t n;
  explicit Buf(size_t n_) : v(n_ + 2 * kGuard), n(n_) {
    std::memset(static_cast<void*>(v.data()), 0xff, v.size() * sizeof(E));
  }
  E* p() { return n ? v.data() + kGuard : nullptr; }
  bool guards_ok() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (!is_guard(v[i]) || !is_guard(v[kGuard + n + i])) return false;
    return true;
  }
  std::vector<double> values() const {
    std::vector<double> r(n);
    for (size_t i = 0; i < n; ++i) r[i] = to_double(v[kGuard + i]);
    return r;
  }
};

template <typename E>
void run(const ref::Case& c, bool gated) {
  constexpr bool f32 = std::is_same_v<E, float>;
  const Dt dt = f32 ? Dt::f32 : Dt::bf16;
  const double tol = f32 ? 1e-5 : 1e-2;
  const ref::Shape s(c);
  const double scale = 1.0 / std::sqrt(double(c.hd));
  std::printf("%s B%ld Tq%ld Tk%ld H%ld G%ld m%ld hd%ld %s%s\n", f32 ? "f32 " : "bf16", long(c.b), long(c.tq),
              long(c.tk), long(c.h), long(c.g), long(c.m), long(c.hd), c.causal ? "causal" : "full",
              gated ? " gated" : "");
  uint64_t seed = uint64_t(c.tq * 131 + c.tk * 7 + c.h * 3 + c.m + c.hd);
  ref::Inputs in{c, {}, {}, {}, {}, {}, {}};
  auto fill = [&](Buf<E>& x, std::vector<double>& seen, double amp) {
    for (size_t i = 0; i < x.n; ++i) x.p()[i] = from_double<E>(amp * ref::rnd(seed));
    seen = x.values();
  };
  Buf<E> q(s.nq()), k(s.nk()), v(s.nk()), mk(s.nm()), mv(s.nm()), dout(s.nq());
  fill(q, in.q, 2.0), fill(k, in.k, 2.0), fill(v, in.v, 1.0), fill(mk, in.mk, 2.0), fill(mv, in.mv, 1.0);
  fill(dout, in.dout, 1.0);
  Buf<float> gate(gated ? size_t(c.b * c.g) : 0);
  for (size_t i = 0; i < gate.n; ++i) gate.p()[i] = i == 0 ? 0.0f : float(0.2 + 1.3 * std::abs(ref::rnd(seed)));
  if (gated) in.gate = gate.values();
  std::vector<double> out_ref, lse_ref;
  ref::forward(in, scale, out_ref, lse_ref);

  const AttentionShape shape{c.b, c.tq, c.tk, c.h, c.g, c.m, c.hd};
  Buf<E> out(s.nq());
  Buf<float> lse(s.rows());
  koff::cuda::attention_forward(dt, q.p(), k.p(), v.p(), mk.p(), mv.p(), gate.p(), out.p(), lse.p(), shape,
                                float(scale), c.causal, nullptr);
  ref::check("out", out.values(), out_ref, tol);
  ref::check_lse(lse.values(), lse_ref, f32 ? 1e-5 : 1e-2);
  if (!out.guards_ok() || !lse.guards_ok()) {
    std::printf("  forward wrote outside its outputs  <-- FAIL\n");
    ++ref::failures;
  }

  // Backward from the reference out (in the element type, as the kernel sees it) and lse (f32).
  Buf<E> outr(s.nq());
  for (size_t i = 0; i < s.nq(); ++i) outr.p()[i] = from_double<E>(out_ref[i]);
  Buf<float> lser(s.rows());
  for (size_t i = 0; i < s.rows(); ++i) lser.p()[i] = float(lse_ref[i]);
  const ref::Grads want = ref::backward(in, outr.values(), lser.values(), scale);
  Buf<E> dq(s.nq()), dk(s.nk()), dv(s.nk()), dmk(s.nm()), dmv(s.nm());
  Buf<float> dsum(s.rows()), dgate(gate.n), dgate_slots(gated ? s.nm() / size_t(c.hd) : 0);
  koff::cuda::attention_backward(dt, dout.p(), q.p(), k.p(), v.p(), mk.p(), mv.p(), gate.p(), outr.p(), lser.p(),
                                 dsum.p(), dq.p(), dk.p(), dv.p(), dmk.p(), dmv.p(), dgate.p(), dgate_slots.p(), shape,
                                 float(scale), c.causal, nullptr);
  ref::check("dq", dq.values(), want.dq, tol);
  ref::check("dk", dk.values(), want.dk, tol);
  ref::check("dv", dv.values(), want.dv, tol);
  if (c.m) {
    ref::check("dmem_k", dmk.values(), want.dmk, tol);
    ref::check("dmem_v", dmv.values(), want.dmv, tol);
  }
  if (gated) ref::check("dgate", dgate.values(), want.dgate, tol);
  if (!dq.guards_ok() || !dk.guards_ok() || !dv.guards_ok() || !dmk.guards_ok() || !dmv.guards_ok() ||
      !dsum.guards_ok() || !dgate.guards_ok() || !dgate_slots.guards_ok()) {
    std::printf("  backward wrote outside its outputs  <-- FAIL\n");
    ++ref::failures;
  }
}

int main(int argc, char** argv) {
  const std::vector<ref::Case> cases = {
      {1, 37, 37, 4, 2, 5, 64, true},    // odd T, GQA 2, memory
      {1, 5, 40, 3, 1, 16, 128, true},   // decode-like Tq < Tk
      {1, 1, 40, 3, 1, 16, 128, true},   // decode step
      {2, 34, 34, 2, 1, 0, 64, false},   // non-causal, m = 0, B = 2
      {1, 20, 8, 2, 1, 0, 64, true},     // Tq > Tk: rows that see nothing
      {1, 5, 5, 24, 1, 3, 64, true},     // 24 heads per KV head (2 positions per block)
      {1, 6, 6, 2, 1, 70, 64, true},     // memory slots spanning three key tiles
      {1, 4, 0, 2, 1, 5, 64, true},      // no real keys: memory only
      {1, 3, 0, 2, 1, 0, 64, true},      // nothing at all
      {1, 35, 35, 2, 1, 3, 80, true},    // head dim 80 (bound 128, zero-padded)
      {1, 33, 33, 2, 2, 0, 32, false},   // head dim 32 (bound 64), G = H
      {1, 9, 9, 2, 1, 2, 192, true},     // head dim 192 (bound 256, 4 keys per warp in dkv)
      {1, 70, 70, 2, 1, 16, 128, true},  // several query blocks and key tiles at hd 128
      {2, 9, 9, 4, 2, 3, 64, true},      // B = 2, G = 2: four gates (gated run), one closed
  };
  int first = 0, last = int(cases.size());
  if (argc > 1) first = std::atoi(argv[1]), last = first + 1;
  for (int i = first; i < last; ++i) {
    run<float>(cases[size_t(i)], false);
    run<bf>(cases[size_t(i)], false);
    if (cases[size_t(i)].m > 0) {
      run<float>(cases[size_t(i)], true);
      run<bf>(cases[size_t(i)], true);
    }
  }
  std::printf("%s: %d failures, %ld launches\n", ref::failures ? "FAILED" : "PASSED", ref::failures, emu::launches);
  return ref::failures ? 1 : 0;
}
