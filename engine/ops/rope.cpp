// RoPE: inverse frequencies and cos/sin tables as Hugging Face builds them, and the rotation op.
//
// HF (transformers' _compute_default_rope_parameters / _compute_llama3_parameters and
// LlamaRotaryEmbedding.forward) computes everything in float32 tensor arithmetic:
//   exponent = arange(0, hd, 2).float() / hd          f32 division
//   inv_freq = 1.0 / (base ** exponent)               f32 pow, then reciprocal
//   wavelen  = 2*pi / inv_freq                        torch evaluates scalar / tensor as
//                                                     reciprocal(t) * scalar, both in f32
//   llama3: inv / factor, smooth = (orig / wavelen - low) / (high - low),
//           (1 - smooth) * inv / factor + smooth * inv        (all f32, left to right)
//   freqs    = position.float() * inv_freq            f32 product (a K = 1 matmul)
//   cos, sin = cos(freqs), sin(freqs)                 f32
// For f32 we replay that chain step by step in float, rounding where torch rounds. The only
// remaining differences are torch's f32 pow/cos/sin (Sleef, <= 1 ulp) against our correctly rounded
// double-then-float ones: inv_freq and the tables agree with HF's to ~1e-7 relative. Replaying the
// rounding matters: at position 8000 an f32 freq carries ~5e-4 rad of rounding that an exact
// computation would not reproduce. (Build with -ffp-contract=off semantics, the default for -std=c++20,
// so that no step is fused into an FMA.)
// For f64 the same formulas run in double throughout: those tables serve gradient checks, which want
// a smooth exact function rather than HF's roundings.
#include <cmath>

#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

void check_rope_args(int64_t head_dim, double theta, const RopeScaling& s) {
  KOFF_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be positive and even, got {}", head_dim);
  KOFF_CHECK(theta > 0, "rope: theta must be positive, got {}", theta);
  if (s.factor > 0) {
    KOFF_CHECK(s.high_freq_factor != s.low_freq_factor && s.low_freq_factor > 0 && s.high_freq_factor > 0 &&
                   s.original_max_position_embeddings > 0,
               "rope: invalid llama3 scaling (low_freq_factor {}, high_freq_factor {}, "
               "original_max_position_embeddings {})",
               s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings);
  }
}

// The HF float32 chain, step by step; T = float replays torch's roundings, T = double is exact math.
template <typename T>
std::vector<T> inv_freq_as(int64_t head_dim, double theta, const RopeScaling& s) {
  check_rope_args(head_dim, theta, s);
  const int64_t half = head_dim / 2;
  std::vector<T> inv(static_cast<size_t>(half));
  const T base = static_cast<T>(theta);
  for (int64_t i = 0; i < half; ++i) {
    const T exponent = static_cast<T>(2 * i) / static_cast<T>(head_dim);
    const T p = static_cast<T>(std::pow(static_cast<double>(base), static_cast<double>(exponent)));
    inv[i] = T(1) / p;
  }
  if (s.factor <= 0) return inv;
  const T factor = static_cast<T>(s.factor), low = static_cast<T>(s.low_freq_factor);
  const T old_len = static_cast<T>(s.original_max_position_embeddings);
  const T low_wavelen = static_cast<T>(static_cast<double>(s.original_max_position_embeddings) / s.low_freq_factor);
  const T high_wavelen = static_cast<T>(static_cast<double>(s.original_max_position_embeddings) / s.high_freq_factor);
  const T span = static_cast<T>(s.high_freq_factor - s.low_freq_factor);
  const T two_pi = static_cast<T>(kTwoPi);
  for (int64_t i = 0; i < half; ++i) {
    const T f = inv[i];
    const T wavelen = (T(1) / f) * two_pi;
    const T scaled = wavelen > low_wavelen ? f / factor : f;
    if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
      const T ratio = (T(1) / wavelen) * old_len;
      const T smooth = (ratio - low) / span;
      const T a = (T(1) - smooth) * scaled;
      const T b = a / factor;
      const T c = smooth * scaled;
      inv[i] = b + c;
    } else {
      inv[i] = scaled;
    }
  }
  return inv;
}

template <typename T>
RopeTables tables_as(int64_t start, int64_t length, int64_t head_dim, double theta, const RopeScaling& s, DType dtype) {
  const std::vector<T> inv = inv_freq_as<T>(head_dim, theta, s);
  const int64_t half = head_dim / 2;
  RopeTables t{Tensor::empty({length, half}, dtype), Tensor::empty({length, half}, dtype)};
  T* c = t.cos.data<T>();
  T* sn = t.sin.data<T>();
  for (int64_t p = 0; p < length; ++p) {
    const T pos = static_cast<T>(start + p);
    for (int64_t i = 0; i < half; ++i) {
      const T freq = pos * inv[i];
      c[p * half + i] = static_cast<T>(std::cos(static_cast<double>(freq)));
      sn[p * half + i] = static_cast<T>(std::sin(static_cast<double>(freq)));
    }
  }
  return t;
}

}  // namespace

std::vector<double> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling) {
  const std::vector<float> f = inv_freq_as<float>(head_dim, theta, scaling);
  return std::vector<double>(f.begin(), f.end());
}

RopeTables rope_tables(int64_t start, int64_t length, int64_t head_dim, double theta, const RopeScaling& scaling,
                       DType dtype) {
  KOFF_CHECK(start >= 0 && length >= 0, "rope_tables: start ({}) and length ({}) must be non-negative", start, length);
  switch (dtype) {
    case DType::f32:
      return tables_as<float>(start, length, head_dim, theta, scaling, dtype);
    case DType::f64:
      return tables_as<double>(start, length, head_dim, theta, scaling, dtype);
    default:
      fail("rope_tables: dtype must be f32 or f64, got {}", dtype_name(dtype));
  }
}

Tensor rope(const Tensor& x, const RopeTables& tables, bool inverse) {
  check_float(x, "rope", "x");
  check_dim(x, 4, "rope", "x [B, T, N, hd]");
  check_compatible(x, tables.cos, "rope", "cos table");
  check_compatible(x, tables.sin, "rope", "sin table");
  const int64_t t = x.size(1), hd = x.size(3);
  KOFF_CHECK(hd % 2 == 0, "rope: head dim of x {} must be even", shape_str(x.shape()));
  const Shape want{t, hd / 2};
  KOFF_CHECK(tables.cos.shape() == want && tables.sin.shape() == want,
             "rope: tables cos {} / sin {} do not match x {} (expected [T, hd/2] = {})", shape_str(tables.cos.shape()),
             shape_str(tables.sin.shape()), shape_str(x.shape()), shape_str(want));
  Tensor out = empty_like(x);
  launch(x.device(), {inverse ? "rope_backward" : "rope", bytes_of({&x, &tables.cos, &tables.sin, &out})},
         &Backend::rope, x.contiguous(), tables.cos.contiguous(), tables.sin.contiguous(), inverse, out);
  return out;
}

}  // namespace koff::ops
