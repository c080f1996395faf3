// Embedding lookup and its gradient, bf16 or f32 tables, i32 or i64 ids:
//   forward   out[i, :] = table[ids[i], :]   (a grid-stride loop over the n d output elements)
//   backward  dtable[ids[i], :] += dy[i, :]  (dtable zeroed by the caller)
// An id outside [0, vocab) is skipped (forward: a zero row) and raises the device's error flag
// (cuda/context.h), which the next synchronisation turns into a koff::Error.
//
// The backward is deterministic (no atomics but the error flag's) and adds in the CPU backend's order
// (engine/cpu/embedding.cpp): every dtable element is one f32 accumulator, started from dtable's value
// and given the dy rows of its id in increasing position i, one add each. For f32 tables the result is
// bitwise the CPU's; for bf16 the f32 sum is rounded to bf16 once (no rounding per add), which is the CPU's
// f32 result on the same bf16 inputs, rounded.
// Up to kSmallN ids (the per-domain memories' few sequences), one kernel and no scratch
// (embedding_backward_small_kernel): block (i, column chunk) exits unless position i is the first of its
// id, else walks ids[i .. n) and adds the rows of its id. More ids: three steps, on scratch from the
// caching allocator:
//   1. keys[j] = id << 32 | j for j < n (an out-of-range id: all ones, after every valid key; raises the
//      flag), padded with all ones to N2 = the next power of two; keys are distinct, so any sort of them
//      gives the same result: a bitonic sort (embedding_sort_kernel, tiles of 2 x threads keys in shared
//      memory; embedding_merge_kernel for the strides beyond a tile) puts them in order of (id, position);
//   2. one block (embedding_runs_kernel) lists where each run of one id starts: runs[0 .. R), runs[R] =
//      the number of valid keys, nruns = R (a block-wide exclusive scan of per-thread head counts);
//   3. embedding_backward_kernel: a block per (run, chunk of columns), a thread per column, walks its
//      run's positions in increasing order (staged in shared memory) and writes its element once.
// Parallelism of step 3 is (distinct ids) x d columns: a sum of one column is sequential, as on the CPU.
#include <algorithm>
#include <string>

#include "cuda/common.cuh"

#ifdef __CUDACC__
#include "cuda/backend.h"
#endif

namespace koff::cuda {

namespace {

// Calls fn(I{}) with I = int64_t or int32_t (cuda/patterns.cuh has the same, but launches with <<<>>>,
// which the CPU emulator of tests/cuda_emu cannot parse).
template <typename Fn>
void with_index(bool idx64, Fn&& fn) {
  if (idx64)
    fn(int64_t{});
  else
    fn(int32_t{});
}

template <typename T, typename I>
__global__ void embedding_kernel(const T* table, const I* ids, T* out, int64_t n, int64_t vocab, int64_t d, int* flag) {
  const int64_t total = n * d, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t id = ld_index(ids, i / d);
    if (id < 0 || id >= vocab) {
      atomicExch(flag, 1);
      st(out, i, 0.0f);
      continue;
    }
    out[i] = table[id * d + i % d];
  }
}

// ---- backward: keys, sort, runs, sums ----------------------------------------------------------

constexpr uint64_t kNoKey = ~uint64_t(0);  // an out-of-range id, or padding: sorts last
constexpr int kSortThreads = 1024;         // bitonic tiles of 2048 keys (16 KiB of shared memory)
constexpr int kColumnThreads = 256;        // the most columns one block of the sums covers
constexpr int64_t kSmallN = 128;           // up to this many ids, the one-kernel path

inline int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// keys[j] for j < n2 (step 1).
template <typename I>
__global__ void embedding_keys_kernel(const I* ids, uint64_t* keys, int64_t n, int64_t n2, int64_t vocab, int* flag) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n2; j += stride) {
    uint64_t key = kNoKey;
    if (j < n) {
      const int64_t id = ld_index(ids, j);
      if (id < 0 || id >= vocab)
        atomicExch(flag, 1);
      else
        key = (uint64_t(id) << 32) | uint64_t(j);
    }
    keys[j] = key;
  }
}

// One compare-exchange of the bitonic network at stride j inside the merge of size k: pair p is
// (i, i + j) with i = the p-th index whose bit j is clear; ascending where bit k of the global index is clear.
__device__ __forceinline__ void bitonic_step(uint64_t* a, int64_t base, int64_t p, int64_t j, int64_t k) {
  const int64_t i = ((p & ~(j - 1)) << 1) | (p & (j - 1));  // j is a power of two
  const uint64_t x = a[i], y = a[i + j];
  const bool ascending = ((base + i) & k) == 0;
  if (ascending ? x > y : x < y) {
    a[i] = y;
    a[i + j] = x;
  }
}

// A tile of `tile` keys (a power of two, 2 x blockDim.x or fewer) in shared memory. k == 0: sorts the
// tile (every merge size 2 .. tile, the directions of the whole network); k > tile: the strides tile/2 .. 1
// of the merge of size k, whose larger strides embedding_merge_kernel has done.
__global__ void embedding_sort_kernel(uint64_t* keys, int64_t tile, int64_t k) {
  extern __shared__ float smem[];
  uint64_t* s = reinterpret_cast<uint64_t*>(smem);
  const int64_t base = int64_t(blockIdx.x) * tile;
  for (int64_t i = threadIdx.x; i < tile; i += blockDim.x) s[i] = keys[base + i];
  __syncthreads();
  const int64_t half = tile / 2;
  for (int64_t kk = (k == 0 ? 2 : k); kk <= (k == 0 ? tile : k); kk <<= 1) {
    for (int64_t j = (k == 0 ? kk / 2 : half); j > 0; j >>= 1) {
      for (int64_t p = threadIdx.x; p < half; p += blockDim.x) bitonic_step(s, base, p, j, kk);
      __syncthreads();
    }
  }
  for (int64_t i = threadIdx.x; i < tile; i += blockDim.x) keys[base + i] = s[i];
}

// The stride j (at least a tile) of the merge of size k, over all n2 keys in global memory.
__global__ void embedding_merge_kernel(uint64_t* keys, int64_t n2, int64_t j, int64_t k) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < n2 / 2; p += stride)
    bitonic_step(keys, 0, p, j, k);
}

// Step 2, one block: thread t owns the sorted keys [t c, (t + 1) c), c = ceil(n / blockDim.x); a head is a
// valid key whose id differs from its predecessor's. Shared memory: 2 x blockDim.x ints.
__global__ void embedding_runs_kernel(const uint64_t* keys, int64_t n, int* runs, int* nruns) {
  extern __shared__ float smem[];
  int* heads = reinterpret_cast<int*>(smem);  // [blockDim.x], scanned in place
  int* valid = heads + blockDim.x;            // [blockDim.x]
  const int t = int(threadIdx.x), nt = int(blockDim.x);
  const int64_t c = (n + nt - 1) / nt, j0 = t * c < n ? t * c : n, j1 = j0 + c < n ? j0 + c : n;
  int h = 0, v = 0;
  for (int64_t j = j0; j < j1; ++j) {
    if (keys[j] == kNoKey) break;
    ++v;
    h += j == 0 || (keys[j] >> 32) != (keys[j - 1] >> 32);
  }
  heads[t] = h;
  valid[t] = v;
  __syncthreads();
  // Inclusive scan of heads (Hillis-Steele), and the total of valid.
  for (int o = 1; o < nt; o <<= 1) {
    const int add = t >= o ? heads[t - o] : 0;
    __syncthreads();
    heads[t] += add;
    __syncthreads();
  }
  int r = heads[t] - h;  // this thread's first run index
  for (int64_t j = j0; j < j1; ++j) {
    if (keys[j] == kNoKey) break;
    if (j == 0 || (keys[j] >> 32) != (keys[j - 1] >> 32)) runs[r++] = int(j);
  }
  if (t == 0) {
    int total = 0;
    for (int u = 0; u < nt; ++u) total += valid[u];
    const int nr = heads[nt - 1];
    runs[nr] = total;
    *nruns = nr;
  }
}

// Step 3: block (x, y) sums the runs x, x + gridDim.x, ... over columns [y blockDim.x, (y + 1) blockDim.x).
// Shared memory: blockDim.x ints (a chunk of the run's positions).
template <typename T>
__global__ void embedding_backward_kernel(const T* dy, const uint64_t* keys, const int* runs, const int* nruns,
                                          T* dtable, int64_t d) {
  extern __shared__ float smem[];
  int* pos = reinterpret_cast<int*>(smem);
  const int64_t col = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  const int nr = *nruns;
  for (int r = int(blockIdx.x); r < nr; r += int(gridDim.x)) {
    const int begin = runs[r], end = runs[r + 1];
    const int64_t row = int64_t(keys[begin] >> 32);
    float acc = col < d ? ld(dtable, row * d + col) : 0.0f;
    for (int b = begin; b < end; b += int(blockDim.x)) {
      const int cnt = end - b < int(blockDim.x) ? end - b : int(blockDim.x);
      if (int(threadIdx.x) < cnt) pos[threadIdx.x] = int(keys[b + int(threadIdx.x)] & 0xffffffffu);
      __syncthreads();
      if (col < d)
        for (int q = 0; q < cnt; ++q) acc += ld(dy, int64_t(pos[q]) * d + col);
      __syncthreads();
    }
    if (col < d) st(dtable, row * d + col, acc);
  }
}

// n <= kSmallN: block (i, y) owns row ids[i] if i is its first position, and sums the row's positions
// i .. n - 1 in order over columns [y blockDim.x, (y + 1) blockDim.x). O(n) id reads per block.
template <typename T, typename I>
__global__ void embedding_backward_small_kernel(const T* dy, const I* ids, T* dtable, int64_t n, int64_t vocab,
                                                int64_t d, int* flag) {
  const int64_t i = blockIdx.x, id = ld_index(ids, i);
  if (id < 0 || id >= vocab) {
    if (blockIdx.y == 0 && threadIdx.x == 0) atomicExch(flag, 1);
    return;
  }
  for (int64_t j = 0; j < i; ++j)
    if (ld_index(ids, j) == id) return;  // an earlier position owns the row
  const int64_t col = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (col >= d) return;
  float acc = ld(dtable, id * d + col);
  for (int64_t j = i; j < n; ++j)
    if (ld_index(ids, j) == id) acc += ld(dy, j * d + col);
  st(dtable, id * d + col, acc);
}

// ---- launchers -------------------------------------------------------------------------------

void embedding(Dt dt, const void* table, const void* ids, bool idx64, void* out, int64_t n, int64_t vocab, int64_t d,
               int* flag, cudaStream_t s) {
  if (n * d == 0) return;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    with_index(idx64, [&](auto itag) {
      using I = decltype(itag);
      launch(embedding_kernel<T, I>, dim3(grid_for(n * d, 256)), 256, 0, s, static_cast<const T*>(table),
             static_cast<const I*>(ids), static_cast<T*>(out), n, vocab, d, flag);
    });
  });
}

// Bytes of scratch embedding_backward needs for n ids (8-byte aligned pieces).
int64_t embedding_backward_scratch_bytes(int64_t n) {
  return pow2_at_least(n) * int64_t(sizeof(uint64_t)) + (n + 2) * int64_t(sizeof(int));
}

// scratch: embedding_backward_scratch_bytes(n) bytes, 8-byte aligned (unused, may be null, for n <=
// small_n). sort_threads (a power of two, 32 .. 1024) sizes the sort's tiles and bounds the runs block;
// tests make both small to reach every kernel.
void embedding_backward(Dt dt, const void* dy, const void* ids, bool idx64, void* dtable, int64_t n, int64_t vocab,
                        int64_t d, void* scratch, int* flag, cudaStream_t s, int sort_threads = kSortThreads,
                        int64_t small_n = kSmallN) {
  if (n * d == 0) return;
  // Threads over columns (as many as d needs, up to kColumnThreads), blocks over column chunks.
  const int threads = int(d >= kColumnThreads ? kColumnThreads : (d + 31) / 32 * 32);
  const int64_t chunks = (d + threads - 1) / threads;
  if (chunks > 65535) throw Error("embedding_backward: d = " + std::to_string(d) + " exceeds the grid");
  if (n <= small_n) {
    on_dt(dt, [&](auto tag) {
      using T = decltype(tag);
      with_index(idx64, [&](auto itag) {
        using I = decltype(itag);
        launch(embedding_backward_small_kernel<T, I>, dim3(unsigned(n), unsigned(chunks)), threads, 0, s,
               static_cast<const T*>(dy), static_cast<const I*>(ids), static_cast<T*>(dtable), n, vocab, d, flag);
      });
    });
    return;
  }
  if (n > int64_t(0x7ffffffe) || vocab > int64_t(0xfffffffe))
    throw Error("embedding_backward: " + std::to_string(n) + " ids or a vocabulary of " + std::to_string(vocab) +
                " exceed the CUDA kernel's 32-bit positions and ids");
  const int64_t n2 = pow2_at_least(n);
  uint64_t* keys = static_cast<uint64_t*>(scratch);
  int* runs = reinterpret_cast<int*>(keys + n2);  // [n + 1]
  int* nruns = runs + n + 1;
  with_index(idx64, [&](auto itag) {
    using I = decltype(itag);
    launch(embedding_keys_kernel<I>, dim3(grid_for(n2, 256)), 256, 0, s, static_cast<const I*>(ids), keys, n, n2, vocab,
           flag);
  });
  // Sort: tiles of `tile` keys, then every merge larger than a tile (its strides >= tile in global memory,
  // the rest in the tile).
  const int64_t tile = n2 < 2 * int64_t(sort_threads) ? n2 : 2 * int64_t(sort_threads);
  const int tile_threads = int(tile / 2 < 32 ? 32 : tile / 2);
  const dim3 tiles(unsigned(n2 / tile));
  const size_t tile_smem = size_t(tile) * sizeof(uint64_t);
  launch(embedding_sort_kernel, tiles, tile_threads, tile_smem, s, keys, tile, int64_t(0));
  for (int64_t k = 2 * tile; k <= n2; k <<= 1) {
    for (int64_t j = k / 2; j >= tile; j >>= 1)
      launch(embedding_merge_kernel, dim3(grid_for(n2 / 2, 256)), 256, 0, s, keys, n2, j, k);
    launch(embedding_sort_kernel, tiles, tile_threads, tile_smem, s, keys, tile, k);
  }
  const int run_threads = int(std::min<int64_t>(sort_threads, (n + 31) / 32 * 32));
  launch(embedding_runs_kernel, dim3(1), run_threads, 2 * size_t(run_threads) * sizeof(int), s,
         static_cast<const uint64_t*>(keys), n, runs, nruns);
  // Sums: blocks over (runs, column chunks): at most min(n, vocab) runs, and about 4096 blocks (each walks
  // every gridDim.x-th run).
  const int64_t by_runs = std::max<int64_t>(1, std::min({n, vocab, 4096 / chunks}));
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch(embedding_backward_kernel<T>, dim3(unsigned(by_runs), unsigned(chunks)), threads,
           size_t(threads) * sizeof(int), s, static_cast<const T*>(dy), static_cast<const uint64_t*>(keys),
           static_cast<const int*>(runs), static_cast<const int*>(nruns), static_cast<T*>(dtable), d);
  });
}

}  // namespace

#ifdef __CUDACC__
// ---- the Backend entries ---------------------------------------------------------------------
namespace {

void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  OpScope op("embedding", table);
  embedding(dt_of(table, "embedding"), cptr(table), cptr(ids), idx64(ids, "embedding"), mptr(out), ids.numel(),
            table.size(0), table.size(1), error_flag(op.device()), op.s());
}
void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) {
  OpScope op("embedding_backward", dy);
  const int64_t n = ids.numel(), d = dtable.size(1);
  // Scratch as int64 words, so the keys are 8-byte aligned (none for the one-kernel path).
  Tensor scratch = n * d != 0 && n > kSmallN
                       ? Tensor::empty({(embedding_backward_scratch_bytes(n) + 7) / 8}, DType::i64, dy.device())
                       : Tensor();
  embedding_backward(dt_of(dy, "embedding_backward"), cptr(dy), cptr(ids), idx64(ids, "embedding_backward"),
                     mptr(dtable), n, dtable.size(0), d, mptr(scratch), error_flag(op.device()), op.s());
}

}  // namespace

void fill_embedding(Backend& b) {
  b.embedding = embedding;
  b.embedding_backward = embedding_backward;
}
#endif  // __CUDACC__

}  // namespace koff::cuda
