// Embedding lookup and its scatter-add gradient. table/dtable [V, d], ids [n] (int32 or int64),
// out/dy [n, d]; all contiguous. An id outside [0, V) is a koff::Error (checked before any write).
//
//   forward:   out[i, :] = table[ids[i], :]
//   backward:  dtable[ids[i], :] += dy[i, :]     (dtable zeroed by the caller)
//
// The backward splits the d columns over threads and walks every id in order inside each thread:
// repeated ids then never race and the sum order is fixed.
#pragma once

#include <cstdint>

namespace koff::cpu {

template <typename I>
void check_ids(const I* ids, int64_t n, int64_t vocab, const char* op);

template <typename T, typename I>
void embedding(const T* table, const I* ids, T* out, int64_t n, int64_t vocab, int64_t d);
template <typename T, typename I>
void embedding_backward(const T* dy, const I* ids, T* dtable, int64_t n, int64_t vocab, int64_t d);

}  // namespace koff::cpu
