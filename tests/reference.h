// Naive f64 reference implementations for the op harness: written from the definitions, loop by
// loop, sharing no code with engine/cpu, so that a bug in a kernel cannot hide in its reference.
#pragma once

#include <cmath>
#include <vector>

#include "engine/ops/ops.h"

namespace koff::ref {

inline Tensor f64(const Tensor& t) { return t.to(DType::f64).contiguous(); }

inline Tensor elementwise(const Tensor& a, const Tensor& b, BinaryOp op) {
  Tensor x = f64(a), y = f64(b), out = Tensor::empty(a.shape(), DType::f64);
  for (int64_t i = 0; i < x.numel(); ++i) {
    double p = x.data<double>()[i], q = y.data<double>()[i];
    out.data<double>()[i] = op == BinaryOp::add ? p + q : op == BinaryOp::sub ? p - q : p * q;
  }
  return out;
}

inline Tensor matmul(const Tensor& a_in, const Tensor& b_in, bool ta, bool tb) {
  Tensor a = f64(a_in), b = f64(b_in);
  const int64_t M = ta ? a.size(-1) : a.size(-2), K = ta ? a.size(-2) : a.size(-1);
  const int64_t N = tb ? b.size(-2) : b.size(-1);
  const int64_t batch = a.numel() / (M * K);
  const bool shared = b.dim() == 2;
  Shape out_shape(a.shape().begin(), a.shape().end() - 2);
  out_shape.push_back(M);
  out_shape.push_back(N);
  Tensor c = Tensor::zeros(out_shape, DType::f64);
  for (int64_t s = 0; s < batch; ++s) {
    const double* A = a.data<double>() + s * M * K;
    const double* B = b.data<double>() + (shared ? 0 : s * K * N);
    double* C = c.data<double>() + s * M * N;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < K; ++p) acc += (ta ? A[p * M + i] : A[i * K + p]) * (tb ? B[j * K + p] : B[p * N + j]);
        C[i * N + j] = acc;
      }
  }
  return c;
}

inline Tensor rmsnorm(const Tensor& x_in, const Tensor& w_in, double eps) {
  Tensor x = f64(x_in), w = f64(w_in), y = Tensor::empty(x.shape(), DType::f64);
  const int64_t d = x.size(-1), rows = x.numel() / d;
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += x.data<double>()[r * d + i] * x.data<double>()[r * d + i];
    double rstd = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t i = 0; i < d; ++i) y.data<double>()[r * d + i] = x.data<double>()[r * d + i] * rstd * w.data<double>()[i];
  }
  return y;
}

// Rotation of pairs (i, i+hd/2) by angle pos * inv_freq[i] (Hugging Face rotate_half), positions
// start..start+T-1; x [B, T, N, hd].
inline Tensor rope(const Tensor& x_in, int64_t start, const std::vector<double>& inv_freq) {
  Tensor x = f64(x_in), y = Tensor::empty(x.shape(), DType::f64);
  const int64_t B = x.size(0), T = x.size(1), N = x.size(2), hd = x.size(3), half = hd / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) {
        const double* in = x.data<double>() + ((b * T + t) * N + n) * hd;
        double* out = y.data<double>() + ((b * T + t) * N + n) * hd;
        for (int64_t i = 0; i < half; ++i) {
          double angle = static_cast<double>(start + t) * inv_freq[i];
          out[i] = in[i] * std::cos(angle) - in[i + half] * std::sin(angle);
          out[i + half] = in[i + half] * std::cos(angle) + in[i] * std::sin(angle);
        }
      }
  return y;
}

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

inline Tensor softmax(const Tensor& x_in) {
  Tensor x = f64(x_in), y = Tensor::empty(x.shape(), DType::f64);
  const int64_t d = x.size(-1), rows = x.numel() / d;
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -INFINITY, s = 0;
    for (int64_t i = 0; i < d; ++i) mx = std::max(mx, x.data<double>()[r * d + i]);
    for (int64_t i = 0; i < d; ++i) s += std::exp(x.data<double>()[r * d + i] - mx);
    for (int64_t i = 0; i < d; ++i) y.data<double>()[r * d + i] = std::exp(x.data<double>()[r * d + i] - mx) / s;
  }
  return y;
}

// Materialises the full score matrix over [memory slots ; real keys]. With a gate [B, G], the memory
// slots' weights e^{s} are multiplied by gate[b, g] (the definition, not + log g).
inline Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& mk_in,
                        const Tensor& mv_in, double scale, bool causal, const Tensor& gate_in = {}) {
  Tensor q = f64(q_in), k = f64(k_in), v = f64(v_in);
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), hd = q.size(3), Tk = k.size(1), G = k.size(2);
  const int64_t m = mk_in.defined() ? mk_in.size(1) : 0;
  Tensor mk = m ? f64(mk_in) : Tensor(), mv = m ? f64(mv_in) : Tensor();
  Tensor gate = gate_in.defined() ? f64(gate_in) : Tensor();
  Tensor out = Tensor::zeros(q.shape(), DType::f64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / G);
      for (int64_t i = 0; i < Tq; ++i) {
        std::vector<double> s;
        std::vector<const double*> vals;
        const double* qi = q.data<double>() + ((b * Tq + i) * H + h) * hd;
        auto score = [&](const double* key) {
          double d = 0;
          for (int64_t e = 0; e < hd; ++e) d += qi[e] * key[e];
          return d * scale;
        };
        for (int64_t j = 0; j < m; ++j) {
          s.push_back(score(mk.data<double>() + ((b * m + j) * G + g) * hd));
          vals.push_back(mv.data<double>() + ((b * m + j) * G + g) * hd);
        }
        for (int64_t j = 0; j < Tk; ++j) {
          if (causal && j > i + (Tk - Tq)) continue;
          s.push_back(score(k.data<double>() + ((b * Tk + j) * G + g) * hd));
          vals.push_back(v.data<double>() + ((b * Tk + j) * G + g) * hd);
        }
        const double gbg = gate.defined() ? gate.data<double>()[b * G + g] : 1.0;
        double mx = -INFINITY, z = 0;
        for (double x : s) mx = std::max(mx, x);
        std::vector<double> w(s.size());
        for (size_t j = 0; j < s.size(); ++j)
          z += w[j] = std::exp(s[j] - mx) * (static_cast<int64_t>(j) < m ? gbg : 1.0);
        double* o = out.data<double>() + ((b * Tq + i) * H + h) * hd;
        if (z == 0) continue;  // sees nothing (or only closed memory): out = 0
        for (size_t j = 0; j < s.size(); ++j)
          for (int64_t e = 0; e < hd; ++e) o[e] += w[j] / z * vals[j][e];
      }
    }
  return out;
}

// Sum over counted rows of -log softmax(logits)[target].
inline double cross_entropy_sum(const Tensor& logits_in, const Tensor& targets, int64_t ignore_index) {
  Tensor l = f64(logits_in);
  const int64_t V = l.size(-1), N = l.numel() / V;
  double total = 0;
  for (int64_t r = 0; r < N; ++r) {
    auto t = static_cast<int64_t>(targets.at({r}));
    if (t == ignore_index) continue;
    double mx = -INFINITY, z = 0;
    for (int64_t i = 0; i < V; ++i) mx = std::max(mx, l.data<double>()[r * V + i]);
    for (int64_t i = 0; i < V; ++i) z += std::exp(l.data<double>()[r * V + i] - mx);
    total += std::log(z) + mx - l.data<double>()[r * V + t];
  }
  return total;
}

inline double hard_concrete_sample(double log_alpha, double u) {
  using HC = ops::HardConcrete;
  u = std::clamp(u, HC::eps, 1 - HC::eps);
  double s = sigmoid((std::log(u) - std::log(1 - u) + log_alpha) / HC::beta);
  return std::clamp(s * (HC::zeta - HC::gamma) + HC::gamma, 0.0, 1.0);
}

inline double hard_concrete_p_open(double log_alpha) {
  using HC = ops::HardConcrete;
  return sigmoid(log_alpha - HC::beta * std::log(-HC::gamma / HC::zeta));
}

}  // namespace koff::ref

namespace koff::ref {

// Inverse RoPE frequencies, Llama 3 scaling included, from the definition (f64 throughout).
inline std::vector<double> rope_inv_freq(int64_t hd, double theta, const ops::RopeScaling& s) {
  std::vector<double> inv(hd / 2);
  for (int64_t i = 0; i < hd / 2; ++i) {
    double f = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(hd));
    if (s.factor > 0) {
      const double pi = 3.141592653589793;
      double wavelen = 2 * pi / f;
      double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
      double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                        (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[i] = f;
  }
  return inv;
}

}  // namespace koff::ref
