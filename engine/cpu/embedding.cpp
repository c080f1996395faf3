// Embedding lookup and its scatter-add gradient. table/dtable [V, d], ids [n] (int32 or int64),
// out/dy [n, d]; all contiguous. An id outside [0, V) is a koff::Error (checked before any write).
//
//   forward:   out[i, :] = table[ids[i], :]
//   backward:  dtable[ids[i], :] += dy[i, :]     (dtable zeroed by the caller)
//
// The backward splits the d columns over threads and walks every id in order inside each thread:
// repeated ids then never race and the sum order is fixed.

#include <algorithm>
#include <cstring>

#include "engine/cpu/common.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/tensor/error.h"

namespace koff::cpu {

template <typename I>
void check_ids(const I* ids, int64_t n, int64_t vocab, const char* op) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    KOFF_CHECK(id >= 0 && id < vocab, "{}: id {} at position {} is out of range for a vocabulary of {}", op, id, i,
               vocab);
  }
}

template <typename T, typename I>
void embedding(const T* table, const I* ids, T* out, int64_t n, int64_t vocab, int64_t d) {
  check_ids(ids, n, vocab, "embedding");
#pragma omp parallel for schedule(static) if (n * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * d, table + static_cast<int64_t>(ids[i]) * d, static_cast<size_t>(d) * sizeof(T));
}

template <typename T, typename I>
void embedding_backward(const T* dy, const I* ids, T* dtable, int64_t n, int64_t vocab, int64_t d) {
  check_ids(ids, n, vocab, "embedding_backward");
  const int nt = (n * d >= kParallelMin) ? max_threads() : 1;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t per = (d + team - 1) / team;
    const int64_t c0 = std::min<int64_t>(d, t * per), c1 = std::min<int64_t>(d, c0 + per);
    for (int64_t i = 0; i < n && c0 < c1; ++i) {
      T* dst = dtable + static_cast<int64_t>(ids[i]) * d;
      const T* src = dy + i * d;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

#define KOFF_INSTANTIATE(T, I)                                                      \
  template void embedding<T, I>(const T*, const I*, T*, int64_t, int64_t, int64_t); \
  template void embedding_backward<T, I>(const T*, const I*, T*, int64_t, int64_t, int64_t);
KOFF_INSTANTIATE(float, int32_t)
KOFF_INSTANTIATE(float, int64_t)
KOFF_INSTANTIATE(double, int32_t)
KOFF_INSTANTIATE(double, int64_t)
#undef KOFF_INSTANTIATE

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

void fill_embedding(Backend& table) {
  table.embedding = [](const Tensor& table, const Tensor& ids, Tensor& out) {
    on_float(table, "embedding", [&](auto tag) {
      using T = decltype(tag);
      on_index(ids, "embedding", [&](auto itag) {
        using I = decltype(itag);
        cpu::embedding<T, I>(ptr<T>(table), ptr<I>(ids), mut<T>(out), ids.numel(), table.size(0), table.size(1));
      });
    });
  };
  table.embedding_backward = [](const Tensor& dy, const Tensor& ids, Tensor& dtable) {
    on_float(dy, "embedding_backward", [&](auto tag) {
      using T = decltype(tag);
      on_index(ids, "embedding_backward", [&](auto itag) {
        using I = decltype(itag);
        cpu::embedding_backward<T, I>(ptr<T>(dy), ptr<I>(ids), mut<T>(dtable), ids.numel(), dtable.size(0),
                                      dtable.size(1));
      });
    });
  };
}

}  // namespace koff::cpu
