// Rotary position embedding, Hugging Face "rotate_half" convention (pairs (i, i + hd/2), not
// interleaved (2i, 2i+1) as in Meta's original code; HF checkpoints permute q/k weights for this).
//
//   x, out [B, T, N, hd] (N heads), cos, sin [T, hd/2]; h = hd/2, c = cos[t, i], s = sin[t, i]:
//   out[.., i]     = x[.., i] c - x[.., i + h] s
//   out[.., i + h] = x[.., i + h] c + x[.., i] s          i in [0, h)
//
// inverse = true uses -s: the rotation by -angle, which is both the inverse and the transpose of the
// forward rotation, hence also its backward. out may alias x (each pair is read before written).
#pragma once

#include <cstdint>

namespace koff::cpu {

template <typename T>
void rope(const T* x, const T* cos, const T* sin, bool inverse, T* out, int64_t batch, int64_t t, int64_t heads,
          int64_t head_dim);

}  // namespace koff::cpu
