#include "engine/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/common.h"

namespace koff::cpu {

namespace {

constexpr int64_t kBlock = 64;

template <typename T>
inline T dot_row(const T* a, const T* b, int64_t n) {
  T s = T(0);
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
inline void axpy_row(T* y, T alpha, const T* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

inline int64_t visible_keys(const AttentionDims& d, int64_t i, bool causal) {
  return causal ? std::clamp<int64_t>(i + d.tk - d.tq + 1, 0, d.tk) : d.tk;
}

// Row of key/value `j` of the list [memory slots ; real keys] for batch b, KV head g.
template <typename T>
inline const T* kv_row(const T* real, const T* mem, const AttentionDims& d, int64_t b, int64_t g, int64_t j) {
  return j < d.mem ? mem + ((b * d.mem + j) * d.groups + g) * d.head_dim
                   : real + ((b * d.tk + (j - d.mem)) * d.groups + g) * d.head_dim;
}
template <typename T>
inline T* kv_row(T* real, T* mem, const AttentionDims& d, int64_t b, int64_t g, int64_t j) {
  return j < d.mem ? mem + ((b * d.mem + j) * d.groups + g) * d.head_dim
                   : real + ((b * d.tk + (j - d.mem)) * d.groups + g) * d.head_dim;
}

}  // namespace

template <typename T>
void attention(const T* q, const T* k, const T* v, const T* mem_k, const T* mem_v, T* out, T* lse,
               const AttentionDims& d, T scale, bool causal) {
  const int64_t hd = d.head_dim, rep = d.heads / d.groups;
  const int64_t work = d.batch * d.tq * d.heads * (d.mem + d.tk) * hd;
#pragma omp parallel if (work >= kParallelMin)
  {
    std::vector<T> acc(static_cast<size_t>(hd));
    T scores[kBlock];
#pragma omp for collapse(3) schedule(dynamic, 16)
    for (int64_t b = 0; b < d.batch; ++b) {
      for (int64_t i = 0; i < d.tq; ++i) {
        for (int64_t h = 0; h < d.heads; ++h) {
          const int64_t row = (b * d.tq + i) * d.heads + h;
          const int64_t g = h / rep;
          const T* qr = q + row * hd;
          const int64_t n = d.mem + visible_keys(d, i, causal);
          std::fill(acc.begin(), acc.end(), T(0));
          T mx = -INFINITY, l = T(0);
          for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
            const int64_t nb = std::min(kBlock, n - j0);
            T bmx = -INFINITY;
            for (int64_t jj = 0; jj < nb; ++jj) {
              scores[jj] = scale * dot_row(qr, kv_row(k, mem_k, d, b, g, j0 + jj), hd);
              bmx = std::max(bmx, scores[jj]);
            }
            const T new_mx = std::max(mx, bmx);
            if (new_mx == -INFINITY) continue;  // every score so far is -inf: nothing to add
            const T corr = std::exp(mx - new_mx);
            if (corr != T(1)) {
              l *= corr;
              for (int64_t c = 0; c < hd; ++c) acc[c] *= corr;
            }
            mx = new_mx;
            for (int64_t jj = 0; jj < nb; ++jj) {
              const T p = std::exp(scores[jj] - mx);
              l += p;
              axpy_row(acc.data(), p, kv_row(v, mem_v, d, b, g, j0 + jj), hd);
            }
          }
          T* o = out + row * hd;
          if (l > T(0)) {
            const T inv = T(1) / l;
            for (int64_t c = 0; c < hd; ++c) o[c] = acc[c] * inv;
            lse[row] = mx + std::log(l);
          } else {
            for (int64_t c = 0; c < hd; ++c) o[c] = T(0);
            lse[row] = -INFINITY;
          }
        }
      }
    }
  }
}

template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* mem_k, const T* mem_v, const T* out,
                        const T* lse, T* dq, T* dk, T* dv, T* dmem_k, T* dmem_v, const AttentionDims& d, T scale,
                        bool causal) {
  const int64_t hd = d.head_dim, rep = d.heads / d.groups;
  const int64_t work = d.batch * d.tq * d.heads * (d.mem + d.tk) * hd;
#pragma omp parallel if (work >= kParallelMin)
  {
    std::vector<T> dq_acc(static_cast<size_t>(hd));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < d.batch; ++b) {
      for (int64_t g = 0; g < d.groups; ++g) {
        for (int64_t j = 0; j < d.mem + d.tk; ++j) {
          std::fill_n(kv_row(dk, dmem_k, d, b, g, j), hd, T(0));
          std::fill_n(kv_row(dv, dmem_v, d, b, g, j), hd, T(0));
        }
        for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
          for (int64_t i = 0; i < d.tq; ++i) {
            const int64_t row = (b * d.tq + i) * d.heads + h;
            const T* qr = q + row * hd;
            const T* dor = dout + row * hd;
            const T* orow = out + row * hd;
            const T l = lse[row];
            const T dsum = dot_row(dor, orow, hd);
            const int64_t n = d.mem + visible_keys(d, i, causal);
            std::fill(dq_acc.begin(), dq_acc.end(), T(0));
            if (l != -INFINITY) {
              for (int64_t j = 0; j < n; ++j) {
                const T* kr = kv_row(k, mem_k, d, b, g, j);
                const T* vr = kv_row(v, mem_v, d, b, g, j);
                const T p = std::exp(scale * dot_row(qr, kr, hd) - l);
                // A subnormal weight contributes nothing measurable and makes the axpys crawl.
                if (p < std::numeric_limits<T>::min()) continue;
                const T ds = p * (dot_row(dor, vr, hd) - dsum);
                axpy_row(kv_row(dv, dmem_v, d, b, g, j), p, dor, hd);
                axpy_row(kv_row(dk, dmem_k, d, b, g, j), scale * ds, qr, hd);
                axpy_row(dq_acc.data(), ds, kr, hd);
              }
            }
            T* dqr = dq + row * hd;
            for (int64_t c = 0; c < hd; ++c) dqr[c] = scale * dq_acc[c];
          }
        }
      }
    }
  }
}

#define KOFF_INSTANTIATE(T)                                                                                            \
  template void attention<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, const AttentionDims&, T, bool); \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*,  \
                                      T*, T*, T*, T*, T*, const AttentionDims&, T, bool);
KOFF_INSTANTIATE(float)
KOFF_INSTANTIATE(double)
#undef KOFF_INSTANTIATE

}  // namespace koff::cpu
