// Counter-based random numbers (Philox-4x32-10, Salmon et al. 2011).
//
// A draw is a pure function of (key, counter): the gate sample of step s on every data-parallel rank
// and after every resume is the same without any state to save or broadcast. `Philox(seed, stream)`
// fixes the key; `uniform(i)`/`normal(i)` give the i-th number of that stream.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "engine/tensor/tensor.h"

namespace koff {

class Philox {
 public:
  Philox(uint64_t seed, uint64_t stream) : key_{uint32_t(seed), uint32_t(seed >> 32)}, stream_(stream) {}

  // Four 32-bit words for block `counter`.
  std::array<uint32_t, 4> block(uint64_t counter) const {
    std::array<uint32_t, 4> c = {uint32_t(counter), uint32_t(counter >> 32), uint32_t(stream_),
                                 uint32_t(stream_ >> 32)};
    std::array<uint32_t, 2> k = key_;
    for (int round = 0; round < 10; ++round) {
      uint64_t p0 = uint64_t(0xD2511F53u) * c[0], p1 = uint64_t(0xCD9E8D57u) * c[2];
      c = {uint32_t(p1 >> 32) ^ c[1] ^ k[0], uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k[1], uint32_t(p0)};
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    return c;
  }
  uint32_t bits(uint64_t i) const { return block(i >> 2)[i & 3]; }
  // Uniform in the open interval (0, 1): never exactly 0 or 1 (24 bits of mantissa, offset by half).
  double uniform(uint64_t i) const { return (double(bits(i) >> 8) + 0.5) * (1.0 / 16777216.0); }
  // Standard normal by Box-Muller over two uniforms of the stream.
  double normal(uint64_t i) const {
    double u1 = uniform(2 * i), u2 = uniform(2 * i + 1);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::array<uint32_t, 2> key_;
  uint64_t stream_;
};

// Fresh tensors from a stream (CPU); `first` is the index of the first number used.
Tensor randn(const Shape& shape, const Philox& rng, DType dtype = DType::f32, double std = 1.0, uint64_t first = 0);
Tensor rand_uniform(const Shape& shape, const Philox& rng, double lo, double hi, DType dtype = DType::f32,
                    uint64_t first = 0);

}  // namespace koff
