// Launch patterns shared by the family files (nvcc only: they launch with <<<>>>, which the CPU
// emulator of tests/cuda_emu cannot parse; the attention files do without them):
//
//   map_kernel / launch_map  a grid-stride loop calling f(i) for i < n, 64-bit indices (pointwise ops);
//   column_sum               a [rows, cols] matrix collapsed to [cols] (or to cols / width groups),
//                            deterministically: the rows are split into column_chunks(rows) chunks, each
//                            block covering 32 columns of one chunk; the partial sums go to scratch in
//                            double and a second kernel adds the chunks in order (no atomics), so results
//                            are the same run to run;
//   row kernels              one block of kRowThreads per row (check_rows bounds the grid).
//
// The kernel templates sit in an unnamed namespace: every family file gets its own copy, as when they
// were defined in each .cu.
#pragma once

#include <string>

#include "cuda/common.cuh"

namespace koff::cuda {

// Column reductions over [rows, cols]: rows split into column_chunks(rows) chunks; scratch is
// column_chunks(rows) * cols doubles.
inline int64_t column_chunks(int64_t rows) {
  const int64_t c = (rows + 63) / 64;
  return c < 1 ? 1 : (c > 128 ? 128 : c);
}

constexpr int kRowThreads = 256;

// Grids of one block per row: rows beyond gridDim.x's limit are refused by the caller.
inline void check_rows(int64_t rows) {
  if (rows > int64_t(0x7fffffff))
    throw Error("CUDA row kernel: " + std::to_string(rows) + " rows exceed the grid limit");
}

// Calls fn(I{}) with I = int64_t or int32_t for an id/target tensor.
template <typename Fn>
void on_index(bool idx64, Fn&& fn) {
  if (idx64)
    fn(int64_t{});
  else
    fn(int32_t{});
}

namespace {

// ---- maps ------------------------------------------------------------------------------------
// A grid-stride loop calling f(i) for i < n. The functors hold their pointers by value.
template <typename F>
__global__ void map_kernel(int64_t n, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

template <typename F>
void launch_map(int64_t n, F f, cudaStream_t s) {
  if (n <= 0) return;
  map_kernel<<<grid_for(n, 256), 256, 0, s>>>(n, f);
  KOFF_CUDA_CHECK(cudaGetLastError());
}

// ---- column sums -----------------------------------------------------------------------------
// value(r, c) summed over the rows of chunk blockIdx.y into partials[chunk * cols + c].
template <typename V>
__global__ void column_partials_kernel(V value, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                                       double* partials) {
  __shared__ double sh[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t c = int64_t(blockIdx.x) * 32 + tx;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  double acc = 0.0;
  if (c < cols)
    for (int64_t r = r0 + ty; r < r1; r += 8) acc += double(value(r, c));
  sh[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && c < cols) {
    double t = 0.0;
    for (int k = 0; k < 8; ++k) t += sh[k][tx];
    partials[int64_t(blockIdx.y) * cols + c] = t;
  }
}

// out[o] = sum over chunks and j < width of partials[chunk * cols + o * width + j].
template <typename T>
__global__ void column_finalize_kernel(const double* partials, int64_t chunks, int64_t cols, int64_t width, T* out) {
  const int64_t nout = cols / width;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < nout; o += stride) {
    double t = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch)
      for (int64_t j = 0; j < width; ++j) t += partials[ch * cols + o * width + j];
    st(out, o, float(t));
  }
}

template <typename T, typename V>
void column_sum(V value, int64_t rows, int64_t cols, int64_t width, T* out, double* scratch, cudaStream_t s) {
  if (cols == 0) return;
  const int64_t chunks = column_chunks(rows), per = (rows + chunks - 1) / chunks;
  if (rows == 0) {
    KOFF_CUDA_CHECK(cudaMemsetAsync(scratch, 0, sizeof(double) * size_t(cols), s));
  } else {
    const dim3 grid(unsigned((cols + 31) / 32), unsigned(chunks));
    column_partials_kernel<<<grid, 256, 0, s>>>(value, rows, cols, per > 0 ? per : 1, scratch);
    KOFF_CUDA_CHECK(cudaGetLastError());
  }
  column_finalize_kernel<<<grid_for(cols / width, 256), 256, 0, s>>>(scratch, rows == 0 ? 1 : chunks, cols, width,
                                                                       out);
  KOFF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

}  // namespace koff::cuda
