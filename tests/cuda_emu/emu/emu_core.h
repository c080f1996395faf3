// A CUDA block emulator on ucontext fibers: one fiber per thread, blocks run one at a time, fibers
// switch only at barriers (block, warp) and warp collectives, in a random order per pass.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <type_traits>
#include <vector>

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline uint3 threadIdx, blockIdx;
inline dim3 gridDim, blockDim;

namespace emu {

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "EMULATOR ERROR: %s (block %u %u %u thread %u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z,
               threadIdx.x);
  std::abort();
}

struct Barrier {
  int expected = 0, count = 0;
  uint64_t gen = 0;
};

struct Fiber {
  ucontext_t ctx;
  char* stack = nullptr;  // State::stacks[tid]
  bool done = false;
  Barrier* waiting = nullptr;
  uint64_t wait_gen = 0;
  unsigned tid = 0;
};

// cp.async emulation: per thread, groups of pending copies.
struct Copy {
  void* dst;
  const void* src;
  size_t n, zfill;
};
struct ThreadPipe {
  std::vector<Copy> open;
  std::vector<std::vector<Copy>> groups;  // committed, oldest first
};

struct State {
  std::vector<Fiber> fibers;
  ucontext_t sched;
  int current = -1;
  Barrier block_bar;
  std::vector<Barrier> warp_bars;
  // Warp exchange buffers (per warp): up to 3 16x16 float matrices + per-lane scalars.
  std::vector<std::vector<float>> xa, xb, xc;
  std::vector<std::vector<float>> lane_val;
  std::vector<std::vector<uint64_t>> lane_bits;  // shuffle exchange, one slot per lane
  std::vector<std::vector<uintptr_t>> lane_ptr;
  std::vector<ThreadPipe> pipes;
  // Fiber stacks, kept from block to block (allocating and zeroing 512 KiB per thread per block
  // dominated grids of many small blocks).
  static constexpr size_t kStackBytes = 512 * 1024;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::function<void()> body;
  std::mt19937 rng{12345};
  int copy_mode = 0;  // 0 immediate, 1 deferred to wait, 2 random completion
};
inline State st;

inline void do_copy(const Copy& c) {
  const size_t n_src = c.n - c.zfill;
  if (n_src) std::memcpy(c.dst, c.src, n_src);
  std::memset(static_cast<char*>(c.dst) + n_src, 0, c.zfill);
}

inline void complete_random_groups() {
  for (auto& p : st.pipes) {
    while (!p.groups.empty() && (st.rng() & 1)) {
      for (auto& c : p.groups.front()) do_copy(c);
      p.groups.erase(p.groups.begin());
    }
  }
}

inline void yield() {
  Fiber& f = st.fibers[size_t(st.current)];
  swapcontext(&f.ctx, &st.sched);
}

inline void arrive_and_wait(Barrier& b) {
  Fiber& f = st.fibers[size_t(st.current)];
  ++b.count;
  if (b.count == b.expected) {
    b.count = 0;
    ++b.gen;
    // The releasing fiber also yields so that others may run first (random order).
    f.waiting = nullptr;
    yield();
    return;
  }
  f.waiting = &b;
  f.wait_gen = b.gen;
  yield();
  if (b.gen == f.wait_gen) die("resumed before barrier release");
}

inline void syncwarp() { arrive_and_wait(st.warp_bars[threadIdx.x / 32]); }

inline void fiber_entry() {
  st.body();
  Fiber& f = st.fibers[size_t(st.current)];
  if (!st.pipes[f.tid].open.empty()) die("thread exits with uncommitted cp.async copies");
  for (auto& g : st.pipes[f.tid].groups)
    if (!g.empty()) die("thread exits with pending cp.async groups");
  f.done = true;
  swapcontext(&f.ctx, &st.sched);
}

inline void run_block(int nthreads, const std::function<void()>& body) {
  st.body = body;
  st.fibers.assign(size_t(nthreads), Fiber{});
  st.block_bar = Barrier{nthreads, 0, 0};
  const int nwarps = (nthreads + 31) / 32;
  if (nthreads % 32) die("block size not a multiple of 32");
  st.warp_bars.assign(size_t(nwarps), Barrier{32, 0, 0});
  st.xa.assign(size_t(nwarps), std::vector<float>(256));
  st.xb.assign(size_t(nwarps), std::vector<float>(256));
  st.xc.assign(size_t(nwarps), std::vector<float>(256));
  st.lane_val.assign(size_t(nwarps), std::vector<float>(32));
  st.lane_bits.assign(size_t(nwarps), std::vector<uint64_t>(32));
  st.lane_ptr.assign(size_t(nwarps), std::vector<uintptr_t>(64));
  st.pipes.assign(size_t(nthreads), ThreadPipe{});
  for (int t = 0; t < nthreads; ++t) {
    Fiber& f = st.fibers[size_t(t)];
    f.tid = unsigned(t);
    if (st.stacks.size() <= size_t(t)) st.stacks.emplace_back(new char[State::kStackBytes]);
    f.stack = st.stacks[size_t(t)].get();
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = State::kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  // Per block, each warp gets a stall probability (percent): some warps crawl, others run ahead.
  std::vector<int> slowness(static_cast<size_t>(nwarps));
  for (auto& x : slowness) x = int(st.rng() % 3) * 45;
  std::vector<int> order(static_cast<size_t>(nthreads));
  for (int t = 0; t < nthreads; ++t) order[size_t(t)] = t;
  for (;;) {
    std::shuffle(order.begin(), order.end(), st.rng);
    bool any_alive = false, progress = false, stalled_any = false;
    // Random warp stalls: warps drift out of phase, so a missing __syncthreads shows.
    std::vector<char> stall(static_cast<size_t>(nwarps));
    for (int w = 0; w < nwarps; ++w) stall[size_t(w)] = int(st.rng() % 100) < slowness[size_t(w)];
    for (int t : order) {
      Fiber& f = st.fibers[size_t(t)];
      if (f.done) continue;
      any_alive = true;
      if (f.waiting && f.waiting->gen == f.wait_gen) continue;  // still blocked
      if (stall[size_t(t / 32)]) {
        stalled_any = true;
        continue;
      }
      f.waiting = nullptr;
      st.current = t;
      threadIdx = uint3{unsigned(t), 0, 0};
      if (st.copy_mode == 2) complete_random_groups();
      swapcontext(&st.sched, &f.ctx);
      progress = true;
    }
    if (!any_alive) break;
    if (!progress && !stalled_any) {
      int done = 0;
      for (auto& f : st.fibers) done += f.done;
      std::fprintf(stderr, "EMULATOR ERROR: deadlock in block %u %u %u (%d threads exited)\n", blockIdx.x, blockIdx.y,
                   blockIdx.z, done);
      std::abort();
    }
  }
  st.current = -1;
}

// Runs every block of a grid, one after another, over a shared-memory arena of arena_bytes: filled
// with 0xff before each block (NaN everywhere: unwritten reads show), and checked after it for writes
// past the launch's dynamic size.
inline void run_grid(dim3 grid, dim3 block, size_t smem_bytes, unsigned char* arena, size_t arena_bytes,
                     const std::function<void()>& body) {
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        std::memset(arena, 0xff, arena_bytes);
        run_block(int(block.x), body);
        for (size_t i = smem_bytes; i < arena_bytes; ++i)
          if (arena[i] != 0xff) die("shared memory written past the dynamic size");
      }
}

}  // namespace emu

inline void __syncthreads() { emu::arrive_and_wait(emu::st.block_bar); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) emu::die("partial syncwarp mask");
  emu::syncwarp();
}
namespace emu {
// A warp shuffle: every lane publishes v, the warp meets, each lane reads lane src(lane)'s value (or
// keeps its own where src returns a lane outside the allowed segment, -1), and the warp meets again
// before the slots are reused. Full-warp masks only; width a power of two up to 32.
template <typename V, typename Src>
V shuffle(unsigned mask, V v, int width, Src src) {
  static_assert(std::is_trivially_copyable_v<V> && sizeof(V) <= 8, "shuffle of a 4- or 8-byte value");
  if (mask != 0xffffffffu) die("partial shuffle mask");
  if (width < 1 || width > 32 || (width & (width - 1))) die("shuffle width");
  const unsigned w = threadIdx.x / 32;
  const int lane = int(threadIdx.x % 32), seg = lane & ~(width - 1);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(V));
  st.lane_bits[w][size_t(lane)] = bits;
  syncwarp();
  const int from = src(lane, seg);
  const uint64_t r = from < 0 ? bits : st.lane_bits[w][size_t(from)];
  syncwarp();
  V out;
  std::memcpy(&out, &r, sizeof(V));
  return out;
}
}  // namespace emu

template <typename V>
V __shfl_sync(unsigned mask, V v, int src_lane, int width = 32) {
  return emu::shuffle(mask, v, width, [&](int, int seg) { return seg + (src_lane & (width - 1)); });
}
template <typename V>
V __shfl_xor_sync(unsigned mask, V v, int lane_mask, int width = 32) {
  return emu::shuffle(mask, v, width, [&](int lane, int seg) {
    const int from = lane ^ lane_mask;
    return from >= 0 && from < 32 && from < seg + width ? from : -1;
  });
}
template <typename V>
V __shfl_down_sync(unsigned mask, V v, unsigned delta, int width = 32) {
  return emu::shuffle(mask, v, width, [&](int lane, int seg) {
    const int from = lane + int(delta);
    return from < seg + width ? from : -1;
  });
}
template <typename V>
V __shfl_up_sync(unsigned mask, V v, unsigned delta, int width = 32) {
  return emu::shuffle(mask, v, width, [&](int lane, int seg) {
    const int from = lane - int(delta);
    return from >= seg ? from : -1;
  });
}
