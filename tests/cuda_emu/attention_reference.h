// Shared by the emulator harnesses (attention_mma_emu.cpp, attention_simt_emu.cpp): the test cases, a
// double-precision reference of the fused attention (cuda/attention.cu's header states the math),
// guarded device-like buffers and the relative-error check. Include after the CUDA stand-ins.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ref {

struct Case {
  int64_t b, tq, tk, h, g, m, hd;
  bool causal;
};

inline double rnd(uint64_t& s) {
  s = s * 6364136223846793005ull + 1442695040888963407ull;
  return double((s >> 11) & ((1ull << 53) - 1)) / double(1ull << 53) * 2.0 - 1.0;
}

inline int failures = 0;

// Fails when max |got - want| exceeds tol times max |want| (or any value is not finite).
inline void check(const char* what, const std::vector<double>& got, const std::vector<double>& want, double tol) {
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
}

// lse: -inf exactly where the reference has -inf, elsewhere within tol (absolute).
inline void check_lse(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  double diff = 0;
  bool bad = false;
  for (size_t i = 0; i < want.size(); ++i) {
    const double a = got[i], w = want[i];
    if (std::isinf(w) || std::isinf(a)) {
      if (!(std::isinf(a) && std::isinf(w) && a < 0 && w < 0)) bad = true;
    } else {
      diff = std::max(diff, std::abs(a - w));
    }
    if (std::isnan(a)) bad = true;
  }
  std::printf("  lse     abs %.2e%s\n", diff, bad || diff > tol ? "   <-- FAIL" : "");
  if (bad || diff > tol) ++failures;
}

// The inputs as the kernel sees them (already rounded to its element type), in the kernel layouts.
struct Inputs {
  Case c;
  std::vector<double> q, k, v, mk, mv, dout;
  std::vector<double> gate = {};  // memory gate [B, G]; empty: ungated
};

// The memory gate of (b, g): the memory slots' weights e^{s} are multiplied by it (the definition).
inline double gate_of(const Inputs& in, int64_t b, int64_t g) {
  return in.gate.empty() ? 1.0 : in.gate[size_t(b * in.c.g + g)];
}

struct Shape {
  int64_t B, Tq, Tk, H, G, M, hd, rep;
  explicit Shape(const Case& c) : B(c.b), Tq(c.tq), Tk(c.tk), H(c.h), G(c.g), M(c.m), hd(c.hd), rep(c.h / c.g) {}
  size_t nq() const { return size_t(B * Tq * H * hd); }
  size_t nk() const { return size_t(B * Tk * G * hd); }
  size_t nm() const { return size_t(B * M * G * hd); }
  size_t rows() const { return size_t(B * Tq * H); }
};

// Keys seen by query position i: memory slots first, then the causal window.
inline int64_t nvis(const Case& c, int64_t i) {
  if (!c.causal) return c.m + c.tk;
  const int64_t n = i + c.tk - c.tq + 1;
  return c.m + std::clamp<int64_t>(n, 0, c.tk);
}

// Element offset of key kk (memory slot or real key) of (b, g) at dim d; mem says which array.
inline size_t key_at(const Shape& s, int64_t b, int64_t kk, int64_t g, int64_t d, bool& mem) {
  mem = kk < s.M;
  return mem ? size_t(((b * s.M + kk) * s.G + g) * s.hd + d) : size_t(((b * s.Tk + kk - s.M) * s.G + g) * s.hd + d);
}

inline void forward(const Inputs& in, double scale, std::vector<double>& out, std::vector<double>& lse) {
  const Shape s(in.c);
  out.assign(s.nq(), 0.0);
  lse.assign(s.rows(), 0.0);
  bool mem;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.Tq; ++i)
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t g = h / s.rep, n = nvis(in.c, i);
        const size_t row = size_t((b * s.Tq + i) * s.H + h);
        if (n == 0) {
          lse[row] = -INFINITY;
          continue;
        }
        std::vector<double> sc(static_cast<size_t>(n));
        double mx = -INFINITY;
        for (int64_t kk = 0; kk < n; ++kk) {
          double acc = 0;
          for (int64_t d = 0; d < s.hd; ++d) {
            const size_t o = key_at(s, b, kk, g, d, mem);
            acc += in.q[row * size_t(s.hd) + size_t(d)] * (mem ? in.mk[o] : in.k[o]);
          }
          sc[size_t(kk)] = acc * scale;
          mx = std::max(mx, sc[size_t(kk)]);
        }
        const double gg = gate_of(in, b, g);
        double l = 0;
        for (int64_t kk = 0; kk < n; ++kk) l += std::exp(sc[size_t(kk)] - mx) * (kk < s.M ? gg : 1.0);
        if (!(l > 0)) {  // only closed memory slots
          lse[row] = -INFINITY;
          continue;
        }
        lse[row] = mx + std::log(l);
        for (int64_t kk = 0; kk < n; ++kk) {
          const double p = std::exp(sc[size_t(kk)] - lse[row]) * (kk < s.M ? gg : 1.0);
          for (int64_t d = 0; d < s.hd; ++d) {
            const size_t o = key_at(s, b, kk, g, d, mem);
            out[row * size_t(s.hd) + size_t(d)] += p * (mem ? in.mv[o] : in.v[o]);
          }
        }
      }
}

// Gradients from out and lse as the kernel's backward receives them.
struct Grads {
  std::vector<double> dq, dk, dv, dmk, dmv;
  std::vector<double> dgate;  // [B, G]: sum over rows and slots of e^{s - lse} (dp - D)
};
inline Grads backward(const Inputs& in, const std::vector<double>& out, const std::vector<double>& lse, double scale) {
  const Shape s(in.c);
  Grads r{std::vector<double>(s.nq()), std::vector<double>(s.nk()), std::vector<double>(s.nk()),
          std::vector<double>(s.nm()), std::vector<double>(s.nm()), std::vector<double>(size_t(s.B * s.G))};
  bool mem;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.Tq; ++i)
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t g = h / s.rep, n = nvis(in.c, i);
        const size_t row = size_t((b * s.Tq + i) * s.H + h), r0 = row * size_t(s.hd);
        if (n == 0) continue;
        double D = 0;
        for (int64_t d = 0; d < s.hd; ++d) D += in.dout[r0 + size_t(d)] * out[r0 + size_t(d)];
        const double L = lse[row];
        if (std::isinf(L)) continue;
        const double gg = gate_of(in, b, g);
        for (int64_t kk = 0; kk < n; ++kk) {
          double sc = 0, dp = 0;
          for (int64_t d = 0; d < s.hd; ++d) {
            const size_t o = key_at(s, b, kk, g, d, mem);
            sc += in.q[r0 + size_t(d)] * (mem ? in.mk[o] : in.k[o]);
            dp += in.dout[r0 + size_t(d)] * (mem ? in.mv[o] : in.v[o]);
          }
          const double u = std::exp(sc * scale - L), p = u * (kk < s.M ? gg : 1.0), ds = p * (dp - D);
          if (kk < s.M) r.dgate[size_t(b * s.G + g)] += u * (dp - D);
          for (int64_t d = 0; d < s.hd; ++d) {
            const size_t o = key_at(s, b, kk, g, d, mem);
            const double dov = in.dout[r0 + size_t(d)], qd = in.q[r0 + size_t(d)];
            r.dq[r0 + size_t(d)] += scale * ds * (mem ? in.mk[o] : in.k[o]);
            (mem ? r.dmk : r.dk)[o] += scale * ds * qd;
            (mem ? r.dmv : r.dv)[o] += p * dov;
          }
        }
      }
  return r;
}

}  // namespace ref
