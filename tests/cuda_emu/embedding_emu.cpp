// The embedding kernels of cuda/embedding.cu, run WITHOUT a GPU on the CPU emulator of CUDA blocks
// (emu/emu_core.h: one fiber per thread, random warp order and stalls, switches at barriers; dynamic
// shared memory starts as NaN and must stay within the launch's size). The real kernel source is
// compiled as C++ against the stand-in CUDA headers and its launchers, koff::cuda::embedding and
// koff::cuda::embedding_backward (keys, bitonic sort and merge, runs scan, sums), are checked on random
// data with many repeated ids, f32 and bf16 tables, i32 and i64 ids:
//   - the backward BITWISE against a sequential reference in engine/cpu/embedding.cpp's order: per
//     element, start from dtable's value and add the dy rows of its id in increasing position, in f32
//     (bf16: the f32 sum rounded once);
//   - that order matters on this data (the f32 reference differs from the reversed-order sum), so a kernel
//     adding in another order fails;
//   - an out-of-range id sets the error flag (and only then), is skipped, and rows nobody hits stay 0;
//   - nothing is written outside dtable or the scratch (guard bands);
//   - each case runs with the entry's settings (up to kSmallN ids the one-kernel path, else the sort with
//     2048-key tiles) and again through the sort with 64-key tiles, which reach the global merge kernel
//     and the merge tiles at these sizes;
//   - the forward against table rows (a zero row for an out-of-range id).
//
//   koff_cuda_emu_embedding      (ctest: cuda_emu_embedding)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace koff::cuda {
namespace {
// The kernels' `extern __shared__ float smem[]` names this array.
alignas(1024) float smem[emu::kSmemArena / sizeof(float)];
}  // namespace
}  // namespace koff::cuda

#ifndef KERNEL_FILE
#error "define KERNEL_FILE, the path of cuda/embedding.cu (tests/CMakeLists.txt does)"
#endif
#include KERNEL_FILE

namespace emu {
void launch_grid(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  run_grid(grid, block, smem_bytes, reinterpret_cast<unsigned char*>(koff::cuda::smem), kSmemArena, body);
}
}  // namespace emu

namespace {

using bf = __nv_bfloat16;
using koff::cuda::Dt;

int failures = 0;

void fail(const std::string& what) {
  std::printf("  %s  <-- FAIL\n", what.c_str());
  ++failures;
}

template <typename E>
float to_f(E x) {
  if constexpr (std::is_same_v<E, float>)
    return x;
  else
    return __bfloat162float(x);
}
template <typename E>
E from_f(float x) {
  if constexpr (std::is_same_v<E, float>)
    return x;
  else
    return __float2bfloat16(x);
}
template <typename E>
uint32_t bits(E x) {
  if constexpr (std::is_same_v<E, float>) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
  } else {
    return x.bits;
  }
}

// A device-like buffer with guards of 0xA5 bytes on both sides.
template <typename E>
struct Buf {
  static constexpr size_t kGuard = 64;
  std::vector<E> v;
  size_t n;
  explicit Buf(size_t n_) : v(n_ + 2 * kGuard), n(n_) {
    std::memset(static_cast<void*>(v.data()), 0xa5, v.size() * sizeof(E));
  }
  E* p() { return v.data() + kGuard; }
  E& operator[](size_t i) { return v[kGuard + i]; }
  bool guards_ok() const {
    const unsigned char* b = reinterpret_cast<const unsigned char*>(v.data());
    const size_t g = kGuard * sizeof(E), total = v.size() * sizeof(E);
    for (size_t i = 0; i < g; ++i)
      if (b[i] != 0xa5 || b[total - 1 - i] != 0xa5) return false;
    return true;
  }
};

struct Case {
  std::string name;
  int64_t n, vocab, d;
  double bad = 0;     // share of out-of-range ids
  double hot = 0;     // share of ids equal to one hot id
  bool init = false;  // dtable starts non-zero (the kernel adds to it, as the CPU's +=)
};

// dy values over many binades, so that the f32 sum depends on the order of its terms.
float wide_value(std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> e(-12, 12);
  return std::ldexp(u(rng), e(rng));
}

struct Stats {
  int order_sensitive = 0;  // cases whose f32 reference differs from the reversed-order sum
};

template <typename E, typename I>
void run(const Case& c, int sort_threads, int64_t small_n, Stats& stats) {
  constexpr bool f32 = std::is_same_v<E, float>;
  const Dt dt = f32 ? Dt::f32 : Dt::bf16;
  const std::string path = c.n <= small_n ? "one kernel" : "sort threads " + std::to_string(sort_threads);
  std::printf("%s %s %-26s n %-5ld vocab %-6ld d %-4ld %s\n", f32 ? "f32 " : "bf16",
              std::is_same_v<I, int64_t> ? "i64" : "i32", c.name.c_str(), long(c.n), long(c.vocab), long(c.d),
              path.c_str());
  std::mt19937_64 rng(uint64_t(c.n * 1000003 + c.vocab * 101 + c.d) ^ (f32 ? 0 : 0x55) ^ (sizeof(I) * 7));
  const int64_t n = c.n, V = c.vocab, d = c.d;
  std::vector<I> ids(static_cast<size_t>(n));
  std::uniform_real_distribution<double> u01(0, 1);
  std::uniform_int_distribution<int64_t> any_id(0, V > 0 ? V - 1 : 0);
  const int64_t hot_id = V > 0 ? any_id(rng) : 0;
  bool any_bad = false;
  for (auto& id : ids) {
    const double r = u01(rng);
    if (r < c.bad || V == 0) {
      // Out of range on either side (and, for i64, beyond 32 bits).
      const int k = int(rng() % 3);
      id = k == 0 ? I(-1) : k == 1 ? I(V) : (std::is_same_v<I, int64_t> ? I(int64_t(1) << 40) : I(V + 7));
      any_bad = true;
    } else if (r < c.bad + c.hot) {
      id = I(hot_id);
    } else {
      id = I(any_id(rng));
    }
  }
  Buf<E> dy(size_t(n * d));
  for (int64_t i = 0; i < n * d; ++i) dy[size_t(i)] = from_f<E>(wide_value(rng));
  Buf<E> dtable(size_t(V * d));
  for (int64_t i = 0; i < V * d; ++i) dtable[size_t(i)] = from_f<E>(c.init ? wide_value(rng) : 0.0f);
  std::vector<E> init(size_t(V * d));
  for (int64_t i = 0; i < V * d; ++i) init[size_t(i)] = dtable[size_t(i)];

  // The reference: engine/cpu/embedding.cpp's loop (i in order, dst[c] += src[c]) in f32; bf16 rounds
  // the f32 sum once. Also the same sums in reversed order.
  std::vector<float> acc(size_t(V * d)), rev(size_t(V * d));
  for (int64_t i = 0; i < V * d; ++i) acc[size_t(i)] = rev[size_t(i)] = to_f(init[size_t(i)]);
  std::vector<int64_t> hits(size_t(V > 0 ? V : 1), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = int64_t(ids[size_t(i)]);
    if (id < 0 || id >= V) continue;
    ++hits[size_t(id)];
    for (int64_t col = 0; col < d; ++col) acc[size_t(id * d + col)] += to_f(dy[size_t(i * d + col)]);
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    const int64_t id = int64_t(ids[size_t(i)]);
    if (id < 0 || id >= V) continue;
    for (int64_t col = 0; col < d; ++col) rev[size_t(id * d + col)] += to_f(dy[size_t(i * d + col)]);
  }
  bool differs = false;
  for (size_t i = 0; i < acc.size(); ++i) differs |= bits(from_f<E>(acc[i])) != bits(from_f<E>(rev[i]));
  if (f32 && differs) ++stats.order_sensitive;

  const int64_t scratch_bytes = koff::cuda::embedding_backward_scratch_bytes(n);
  Buf<uint64_t> scratch(size_t((scratch_bytes + 7) / 8));
  Buf<int> flag(1);
  flag[0] = 0;
  koff::cuda::embedding_backward(dt, dy.p(), ids.data(), std::is_same_v<I, int64_t>, dtable.p(), n, V, d, scratch.p(),
                                 flag.p(), nullptr, sort_threads, small_n);
  int64_t mismatches = 0, first = -1;
  for (int64_t i = 0; i < V * d; ++i)
    if (bits(dtable[size_t(i)]) != bits(from_f<E>(acc[size_t(i)]))) {
      if (first < 0) first = i;
      ++mismatches;
    }
  if (mismatches)
    fail("backward: " + std::to_string(mismatches) + " elements differ from the sequential reference, first [" +
         std::to_string(first / d) + ", " + std::to_string(first % d) + "]: got " +
         std::to_string(to_f(dtable[size_t(first)])) + " want " + std::to_string(acc[size_t(first)]));
  for (int64_t r = 0; r < V; ++r)
    if (!hits[size_t(r)])
      for (int64_t col = 0; col < d; ++col)
        if (bits(dtable[size_t(r * d + col)]) != bits(init[size_t(r * d + col)])) {
          fail("backward: row " + std::to_string(r) + " has no id but changed");
          col = d, r = V;
        }
  if (flag[0] != (any_bad ? 1 : 0))
    fail("backward: error flag " + std::to_string(flag[0]) + ", expected " + std::to_string(any_bad ? 1 : 0));
  if (!dtable.guards_ok() || !scratch.guards_ok() || !flag.guards_ok()) fail("backward wrote outside its buffers");

  // The forward, on the same ids: out[i] = table[ids[i]], a zero row (and the flag) for a bad id (once per
  // case and type: it has no sort).
  if (sort_threads != koff::cuda::kSortThreads) return;
  Buf<E> table(size_t(V * d)), out(size_t(n * d));
  for (int64_t i = 0; i < V * d; ++i) table[size_t(i)] = from_f<E>(wide_value(rng));
  flag[0] = 0;
  koff::cuda::embedding(dt, table.p(), ids.data(), std::is_same_v<I, int64_t>, out.p(), n, V, d, flag.p(), nullptr);
  int64_t fwd_bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = int64_t(ids[size_t(i)]);
    for (int64_t col = 0; col < d; ++col) {
      const uint32_t want = id < 0 || id >= V ? bits(from_f<E>(0.0f)) : bits(table[size_t(id * d + col)]);
      fwd_bad += bits(out[size_t(i * d + col)]) != want;
    }
  }
  if (fwd_bad) fail("forward: " + std::to_string(fwd_bad) + " elements differ");
  if (flag[0] != (any_bad ? 1 : 0)) fail("forward: error flag " + std::to_string(flag[0]));
  if (!out.guards_ok() || !table.guards_ok()) fail("forward wrote outside its buffers");
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<Case> cases = {
      {"single id", 1, 5, 100},
      {"domain ids", 8, 6, 576, 0, 0.5},
      {"domain ids, one domain", 8, 6, 576, 0, 1.0},
      {"domain ids, out of range", 8, 6, 576, 0.25, 0.25},
      {"small n, many repeats", 128, 7, 96, 0.02, 0.4},
      {"tokens", 2000, 300, 64, 0, 0.3},
      {"tokens, out of range", 2000, 300, 64, 0.05, 0.3},
      {"tokens, dtable += ", 700, 50, 48, 0, 0.2, true},
      {"one id, long run", 1000, 1, 40},
      {"large vocab", 513, 150000, 33, 0.01, 0.1},
      {"every id out of range", 3, 4, 16, 1.0},
      {"empty vocabulary", 5, 0, 8},
  };
  const std::string only = argc > 1 ? argv[1] : "";
  Stats stats;
  for (const Case& c : cases) {
    if (!only.empty() && c.name.find(only) == std::string::npos) continue;
    // The entry's settings, then the sort path at every n with 64-key tiles.
    for (auto [threads, small_n] : {std::pair<int, int64_t>{koff::cuda::kSortThreads, koff::cuda::kSmallN}, {32, 0}}) {
      run<float, int32_t>(c, threads, small_n, stats);
      run<float, int64_t>(c, threads, small_n, stats);
      run<bf, int32_t>(c, threads, small_n, stats);
      run<bf, int64_t>(c, threads, small_n, stats);
    }
  }
  // The data must make the order of the sums visible: a kernel adding repeated ids in another order
  // (the atomics this replaced, or a reversed walk) would then fail the bitwise check above.
  if (only.empty() && stats.order_sensitive < 8)
    fail("only " + std::to_string(stats.order_sensitive) +
         " f32 runs where the reversed sum differs: the data does not test the order");
  std::printf("order-sensitive f32 runs: %d; %ld launches; %s\n", stats.order_sensitive, emu::launches,
              failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
