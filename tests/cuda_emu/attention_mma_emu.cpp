// The tensor-core attention of cuda/attention_mma.cu, run WITHOUT a GPU: the real kernel source is
// compiled as C++ against stand-in CUDA headers (tests/cuda_emu/emu/) and executed on a CPU emulator
// of CUDA blocks, then compared with a double-precision reference (forward out/lse, every gradient,
// bf16 tolerance 1e-2; guard bands catch writes outside the outputs).
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

namespace emu {
void launch_grid(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        std::memset(koff::cuda::smem, 0xff, kSmemArena);  // NaN everywhere: unwritten reads show
        run_block(int(block.x), body);
        for (size_t i = smem_bytes; i < kSmemArena; ++i)
          if (koff::cuda::smem[i] != 0xff) die("shared memory written past the dynamic size");
      }
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

struct Case {
  int64_t b, tq, tk, h, g, m, hd;
  bool causal;
};

double rnd(uint64_t& s) {
  s = s * 6364136223846793005ull + 1442695040888963407ull;
  return double((s >> 11) & ((1ull << 53) - 1)) / double(1ull << 53) * 2.0 - 1.0;
}

int failures = 0;
void check(const char* what, const std::vector<double>& got, const std::vector<double>& want, double tol,
           const std::string& tag) {
  double scale = 0, diff = 0;
  bool nan = false;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::abs(want[i]));
    if (!std::isfinite(got[i])) nan = true;
    diff = std::max(diff, std::abs(got[i] - want[i]));
  }
  const double rel = diff / std::max(scale, 1e-30);
  const bool ok = !nan && (rel < tol || (scale == 0 && diff == 0));
  if (!ok) ++failures;
  std::printf("  %-7s rel %.2e (max %.3g)%s%s\n", what, rel, scale, nan ? " NaN!" : "", ok ? "" : "   <-- FAIL");
  (void)tag;
}

void run(const Case& c, int copy_mode) {
  emu::st.copy_mode = copy_mode;
  const int64_t B = c.b, Tq = c.tq, Tk = c.tk, H = c.h, G = c.g, M = c.m, hd = c.hd, rep = H / G;
  const double scale = 1.0 / std::sqrt(double(hd));
  char tag[200];
  std::snprintf(tag, sizeof tag, "B%ld Tq%ld Tk%ld H%ld G%ld m%ld hd%ld %s copy%d", long(B), long(Tq), long(Tk),
                long(H), long(G), long(M), long(hd), c.causal ? "causal" : "full", copy_mode);
  std::printf("%s\n", tag);
  uint64_t seed = uint64_t(Tq * 131 + Tk * 7 + H * 3 + M + hd);
  auto fill = [&](Buf& x, double amp) {
    for (size_t i = 0; i < x.n; ++i) x.p()[i] = __float2bfloat16(float(amp * rnd(seed)));
  };
  const size_t nq = size_t(B * Tq * H * hd), nk = size_t(B * Tk * G * hd), nm = size_t(B * M * G * hd);
  Buf q(nq), k(nk), v(nk), mk(nm), mv(nm), dout(nq);
  fill(q, 2.0), fill(k, 2.0), fill(v, 1.0), fill(mk, 2.0), fill(mv, 1.0), fill(dout, 1.0);
  auto Q = [&](int64_t b, int64_t i, int64_t h, int64_t d) { return double(__bfloat162float(q.p()[((b * Tq + i) * H + h) * hd + d])); };
  auto key = [&](Buf& real, Buf& mem, int64_t b, int64_t kk, int64_t g, int64_t d) {
    return kk < M ? double(__bfloat162float(mem.p()[((b * M + kk) * G + g) * hd + d]))
                  : double(__bfloat162float(real.p()[((b * Tk + kk - M) * G + g) * hd + d]));
  };
  auto nvis = [&](int64_t i) {
    if (!c.causal) return M + Tk;
    int64_t n = i + Tk - Tq + 1;
    return M + std::clamp<int64_t>(n, 0, Tk);
  };
  // Reference forward.
  std::vector<double> out_ref(nq, 0.0), lse_ref(size_t(B * Tq * H));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / rep, n = nvis(i);
        const size_t row = size_t((b * Tq + i) * H + h);
        if (n == 0) {
          lse_ref[row] = -INFINITY;
          continue;
        }
        std::vector<double> s(static_cast<size_t>(n));
        double mx = -INFINITY;
        for (int64_t kk = 0; kk < n; ++kk) {
          double acc = 0;
          for (int64_t d = 0; d < hd; ++d) acc += Q(b, i, h, d) * key(k, mk, b, kk, g, d);
          s[size_t(kk)] = acc * scale;
          mx = std::max(mx, s[size_t(kk)]);
        }
        double l = 0;
        for (auto& x : s) l += std::exp(x - mx);
        lse_ref[row] = mx + std::log(l);
        for (int64_t kk = 0; kk < n; ++kk) {
          const double p = std::exp(s[size_t(kk)] - lse_ref[row]);
          for (int64_t d = 0; d < hd; ++d) out_ref[row * size_t(hd) + size_t(d)] += p * key(v, mv, b, kk, g, d);
        }
      }
  const AttentionShape shape{B, Tq, Tk, H, G, M, hd};
  Buf out(nq);
  FBuf lse(size_t(B * Tq * H));
  if (!koff::cuda::attention_use_mma(koff::cuda::Dt::bf16, shape, {q.p(), k.p(), v.p(), out.p()})) {
    std::printf("  not eligible\n");
    ++failures;
    return;
  }
  koff::cuda::attention_forward_mma(q.p(), k.p(), v.p(), M ? mk.p() : nullptr, M ? mv.p() : nullptr, out.p(), lse.p(),
                                    shape, float(scale), c.causal, nullptr);
  std::vector<double> got(nq), lg(lse.n), lw(lse.n);
  for (size_t i = 0; i < nq; ++i) got[i] = out.at(i);
  check("out", got, out_ref, 1e-2, tag);
  double lse_diff = 0;
  bool lse_bad = false;
  for (size_t i = 0; i < lse.n; ++i) {
    const double a = lse.p()[i], w = lse_ref[i];
    if (std::isinf(w) || std::isinf(a)) {
      if (!(std::isinf(a) && std::isinf(w) && a < 0 && w < 0)) lse_bad = true;
    } else {
      lse_diff = std::max(lse_diff, std::abs(a - w));
    }
    if (std::isnan(a)) lse_bad = true;
  }
  std::printf("  lse     abs %.2e%s\n", lse_diff, lse_bad || lse_diff > 1e-2 ? "   <-- FAIL" : "");
  if (lse_bad || lse_diff > 1e-2) ++failures;
  if (!out.guards_ok() || !lse.guards_ok()) {
    std::printf("  forward wrote outside its outputs  <-- FAIL\n");
    ++failures;
  }

  // Reference backward, from the reference out (rounded to bf16, as the kernel sees it) and lse.
  Buf outb(nq);
  for (size_t i = 0; i < nq; ++i) outb.p()[i] = __float2bfloat16(float(out_ref[i]));
  FBuf lsef(lse.n);
  for (size_t i = 0; i < lse.n; ++i) lsef.p()[i] = float(lse_ref[i]);
  std::vector<double> dq_ref(nq, 0.0), dk_ref(nk, 0.0), dv_ref(nk, 0.0), dmk_ref(nm, 0.0), dmv_ref(nm, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / rep, n = nvis(i);
        const size_t row = size_t((b * Tq + i) * H + h);
        if (n == 0) continue;
        double D = 0;
        for (int64_t d = 0; d < hd; ++d)
          D += double(__bfloat162float(dout.p()[row * size_t(hd) + size_t(d)])) * outb.at(row * size_t(hd) + size_t(d));
        const double L = double(lsef.p()[row]);
        for (int64_t kk = 0; kk < n; ++kk) {
          double s = 0, dp = 0;
          for (int64_t d = 0; d < hd; ++d) {
            s += Q(b, i, h, d) * key(k, mk, b, kk, g, d);
            dp += double(__bfloat162float(dout.p()[row * size_t(hd) + size_t(d)])) * key(v, mv, b, kk, g, d);
          }
          const double p = std::exp(s * scale - L), ds = p * (dp - D);
          for (int64_t d = 0; d < hd; ++d) {
            const double dov = __bfloat162float(dout.p()[row * size_t(hd) + size_t(d)]);
            dq_ref[row * size_t(hd) + size_t(d)] += scale * ds * key(k, mk, b, kk, g, d);
            if (kk < M) {
              const size_t o = size_t(((b * M + kk) * G + g) * hd + d);
              dmk_ref[o] += scale * ds * Q(b, i, h, d);
              dmv_ref[o] += p * dov;
            } else {
              const size_t o = size_t(((b * Tk + kk - M) * G + g) * hd + d);
              dk_ref[o] += scale * ds * Q(b, i, h, d);
              dv_ref[o] += p * dov;
            }
          }
        }
      }
  Buf dq(nq), dk(nk), dv(nk), dmk(nm), dmv(nm);
  FBuf dsum(lse.n);
  koff::cuda::attention_backward_mma(dout.p(), q.p(), k.p(), v.p(), M ? mk.p() : nullptr, M ? mv.p() : nullptr,
                                     outb.p(), lsef.p(), dsum.p(), dq.p(), dk.p(), dv.p(), M ? dmk.p() : nullptr,
                                     M ? dmv.p() : nullptr, shape, float(scale), c.causal, nullptr);
  auto vec = [](const Buf& x) {
    std::vector<double> r(x.n);
    for (size_t i = 0; i < x.n; ++i) r[i] = x.at(i);
    return r;
  };
  check("dq", vec(dq), dq_ref, 1e-2, tag);
  check("dk", vec(dk), dk_ref, 1e-2, tag);
  check("dv", vec(dv), dv_ref, 1e-2, tag);
  if (M) {
    check("dmem_k", vec(dmk), dmk_ref, 1e-2, tag);
    check("dmem_v", vec(dmv), dmv_ref, 1e-2, tag);
  }
  if (!dq.guards_ok() || !dk.guards_ok() || !dv.guards_ok() || !dmk.guards_ok() || !dmv.guards_ok() ||
      !dsum.guards_ok()) {
    std::printf("  backward wrote outside its outputs  <-- FAIL\n");
    ++failures;
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
  std::printf("%s: %d failures, %ld launches\n", failures ? "FAILED" : "PASSED", failures, emu::launches);
  return failures ? 1 : 0;
}
