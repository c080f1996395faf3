// Row and column reductions, bf16 I/O with f32 math (double where sums get long): sum/dot, bias and
// gate gradients (column sums; the gated SwiGLU backward rides on one), RMSNorm forward/backward,
// softmax, embedding gather/scatter-add, RoPE, cross-entropy rows and gradients, KL divergence.
//
// Row kernels use one block per row with warp-shuffle block reductions. Column sums (a [rows, cols]
// matrix collapsed to [cols]) split the rows into column_chunks(rows) chunks, each block covering 32
// columns of one chunk; the partial sums go to scratch in double and a second kernel adds the chunks
// in order, so results are deterministic run to run (no atomics).
#include "cuda/common.cuh"

namespace koff::cuda {

namespace {

constexpr int kRowThreads = 256;

// ---- sum / dot -------------------------------------------------------------------------------
template <typename T>
__global__ void sum_partials_kernel(const T* a, const T* b, int64_t n, double* partials) {
  __shared__ double sh[32];
  double acc = 0.0;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    acc += b ? double(ld(a, i)) * double(ld(b, i)) : double(ld(a, i));
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename T>
__global__ void sum_doubles_kernel(const double* a, int64_t n, T* out) {
  __shared__ double sh[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += a[i];
  acc = block_sum(acc, sh);
  if (threadIdx.x == 0) st(out, 0, float(acc));
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

template <typename T>
struct ColumnOf {
  const T* x;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const { return ld(x, r * cols + c); }
};
template <typename T>
struct ProductOf {
  const T* a;
  const T* b;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const { return ld(a, r * cols + c) * ld(b, r * cols + c); }
};
template <typename T>
struct NormWeightGrad {
  const T* dy;
  const T* x;
  const float* rstd;
  int64_t d;
  __device__ float operator()(int64_t r, int64_t c) const { return ld(dy, r * d + c) * ld(x, r * d + c) * rstd[r]; }
};

// The gated SwiGLU's backward at (r, c): writes dgate and dup, returns dy silu(g) u for dz's column sum.
template <typename T>
struct SwigluGatedBackAt {
  const T* dy;
  const T* gate;
  const T* up;
  const T* z;
  T* dgate;
  T* dup;
  int64_t cols;
  __device__ double operator()(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    const float d = ld(dy, i);
    const SwigluGatedGrad g = swiglu_gated_grad(d, ld(gate, i), ld(up, i), ld(z, c));
    st(dgate, i, g.dgate);
    st(dup, i, g.dup);
    return double(d) * double(g.m);
  }
};

// ---- RMSNorm ---------------------------------------------------------------------------------
template <typename T>
__global__ void rmsnorm_kernel(const T* x, const T* w, float eps, T* y, float* rstd, int64_t d) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * d;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = ld(xr, i);
    ss += v * v;
  }
  ss = block_sum(ss, sh);
  const float rs = static_cast<float>(1.0 / sqrt(double(ss) / double(d) + double(eps)));
  if (threadIdx.x == 0) rstd[row] = rs;
  T* yr = y + row * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) st(yr, i, ld(xr, i) * rs * ld(w, i));
}

template <typename T>
__global__ void rmsnorm_dx_kernel(const T* dy, const T* x, const T* w, const float* rstd, T* dx, int64_t d) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const T *xr = x + row * d, *dyr = dy + row * d;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) s += ld(dyr, i) * ld(w, i) * ld(xr, i);
  s = block_sum(s, sh);
  const float rs = rstd[row], c = (s / float(d)) * rs * rs;
  T* dxr = dx + row * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) st(dxr, i, rs * (ld(w, i) * ld(dyr, i) - ld(xr, i) * c));
}

// ---- softmax ---------------------------------------------------------------------------------
template <typename T>
__global__ void softmax_kernel(const T* x, T* out, int64_t cols) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * cols;
  T* o = out + row * cols;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, ld(xr, j));
  mx = block_max(mx, sh);
  if (mx == -INFINITY) {  // fully masked row: zeros, like the CPU kernel
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) st(o, j, 0.0f);
    return;
  }
  float l = 0.0f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) l += expf(ld(xr, j) - mx);
  l = block_sum(l, sh);
  const float inv = 1.0f / l;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) st(o, j, expf(ld(xr, j) - mx) * inv);
}

template <typename T>
__global__ void softmax_backward_kernel(const T* dy, const T* y, T* dx, int64_t cols) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const T *dyr = dy + row * cols, *yr = y + row * cols;
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += ld(dyr, j) * ld(yr, j);
  s = block_sum(s, sh);
  T* d = dx + row * cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) st(d, j, ld(yr, j) * (ld(dyr, j) - s));
}

// ---- embedding -------------------------------------------------------------------------------
template <typename T, typename I>
__global__ void embedding_kernel(const T* table, const I* ids, T* out, int64_t n, int64_t vocab, int64_t d,
                                 int* flag) {
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

__device__ __forceinline__ void add_to(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void add_to(bf16_t* p, float v) { atomicAdd(p, __float2bfloat16(v)); }

template <typename T, typename I>
__global__ void embedding_backward_kernel(const T* dy, const I* ids, T* dtable, int64_t n, int64_t vocab, int64_t d,
                                          int* flag) {
  const int64_t total = n * d, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t id = ld_index(ids, i / d);
    if (id < 0 || id >= vocab) {
      atomicExch(flag, 1);
      continue;
    }
    add_to(dtable + id * d + i % d, ld(dy, i));
  }
}

// ---- RoPE ------------------------------------------------------------------------------------
template <typename T>
struct RopeF {
  const T* x;
  const T* cos;
  const T* sin;
  float sign;
  T* out;
  int64_t t, heads, hd;
  __device__ void operator()(int64_t i) const {
    const int64_t h = hd / 2, k = i % h, row = i / h;  // row = (b * t + p) * heads + n
    const int64_t p = (row / heads) % t;
    const int64_t base = row * hd;
    const float a = ld(x, base + k), b = ld(x, base + h + k);
    const float c = ld(cos, p * h + k), si = sign * ld(sin, p * h + k);
    st(out, base + k, a * c - b * si);
    st(out, base + h + k, b * c + a * si);
  }
};

template <typename F>
__global__ void map_kernel(int64_t n, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

// ---- cross-entropy ---------------------------------------------------------------------------
// log sum exp of a row, every thread of the block gets it. Each thread keeps a running (max, sum)
// pair over its columns; the pairs are merged across the block in double.
template <typename T>
__device__ float block_lse(const T* x, int64_t v, float* shf, double* shd) {
  float m = -INFINITY, l = 0.0f;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float xj = ld(x, j);
    if (xj > m) {
      l = (m == -INFINITY ? 0.0f : l * expf(m - xj)) + 1.0f;
      m = xj;
    } else if (xj != -INFINITY) {
      l += expf(xj - m);
    }
  }
  const float mx = block_max(m, shf);
  if (mx == -INFINITY || isinf(mx)) return mx;  // all -inf, or +inf present: lse is that infinity
  const double part = (m == -INFINITY) ? 0.0 : double(l) * exp(double(m) - double(mx));
  const double tot = block_sum(part, shd);
  return mx + static_cast<float>(log(tot));
}

template <typename T, typename I>
__global__ void ce_rows_kernel(const T* x, const I* targets, int64_t v, int64_t ignore_index, float* lse,
                               double* row_loss, int* flag) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * v;
  const float l = block_lse(xr, v, shf, shd);
  if (threadIdx.x != 0) return;
  lse[row] = l;
  const int64_t t = ld_index(targets, row);
  double loss = 0.0;
  if (t != ignore_index) {
    if (t < 0 || t >= v)
      atomicExch(flag, 1);
    else
      loss = double(l) - double(ld(xr, t));
  }
  row_loss[row] = loss;
}

template <typename T, typename G, typename I>
__global__ void ce_grad_kernel(const T* x, const I* targets, const float* lse, int64_t v, int64_t ignore_index,
                               float dloss, G* g, bf16_t* g2) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * v;
  G* gr = g + row * v;
  bf16_t* g2r = g2 ? g2 + row * v : nullptr;
  const int64_t t = ld_index(targets, row);
  const float l = lse[row];
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    float val = 0.0f;
    if (t != ignore_index) {
      val = dloss * expf(ld(xr, j) - l);
      if (fabsf(val) < 1.17549435e-38f) val = 0.0f;  // flush subnormals, as the CPU kernel does
      if (j == t) val -= dloss;
    }
    st(gr, j, val);
    if (g2r) g2r[j] = __float2bfloat16(val);
  }
}

template <typename I>
__global__ void count_targets_kernel(const I* targets, int64_t n, int64_t ignore_index, int64_t* count) {
  __shared__ double sh[32];
  double c = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) c += ld_index(targets, i) != ignore_index ? 1.0 : 0.0;
  c = block_sum(c, sh);
  if (threadIdx.x == 0) *count = static_cast<int64_t>(c);
}

template <typename T>
__global__ void kl_rows_kernel(const T* x, const T* t, int64_t v, double* row_kl) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t row = blockIdx.x;
  const T *xr = x + row * v, *tr = t + row * v;
  const float lx = block_lse(xr, v, shf, shd), lt = block_lse(tr, v, shf, shd);
  double kl = 0.0;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const double log_pt = double(ld(tr, j) - lt);
    kl += exp(log_pt) * (log_pt - double(ld(xr, j) - lx));
  }
  kl = block_sum(kl, shd);
  if (threadIdx.x == 0) row_kl[row] = kl;
}

template <typename T>
__global__ void kl_grad_kernel(float dloss, const T* x, const T* t, int64_t v, T* g) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t row = blockIdx.x;
  const T *xr = x + row * v, *tr = t + row * v;
  const float lx = block_lse(xr, v, shf, shd), lt = block_lse(tr, v, shf, shd);
  T* gr = g + row * v;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
    st(gr, j, dloss * (expf(ld(xr, j) - lx) - expf(ld(tr, j) - lt)));
}

// Grids of one block per row: rows beyond gridDim.x's limit are refused by the caller.
void check_rows(int64_t rows) {
  if (rows > int64_t(0x7fffffff))
    throw Error("CUDA row kernel: " + std::to_string(rows) + " rows exceed the grid limit");
}

template <typename Fn>
void on_index(bool idx64, Fn&& fn) {
  if (idx64)
    fn(int64_t{});
  else
    fn(int32_t{});
}

}  // namespace

void sum(Dt dt, const void* a, const void* b, void* out, int64_t n, double* scratch, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    const unsigned blocks = n > 0 ? (grid_for(n, 256) < unsigned(kReduceBlocks) ? grid_for(n, 256) : kReduceBlocks) : 1;
    sum_partials_kernel<T><<<blocks, 256, 0, s>>>(static_cast<const T*>(a), static_cast<const T*>(b), n, scratch);
    KOFF_CUDA_CHECK(cudaGetLastError());
    sum_doubles_kernel<T><<<1, 1024, 0, s>>>(scratch, blocks, static_cast<T*>(out));
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void sum_doubles(const double* a, int64_t n, Dt dt, void* out, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    sum_doubles_kernel<T><<<1, 1024, 0, s>>>(a, n, static_cast<T*>(out));
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void sum_to_last(Dt dt, const void* x, void* out, int64_t rows, int64_t cols, double* scratch, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    column_sum(ColumnOf<T>{static_cast<const T*>(x), cols}, rows, cols, 1, static_cast<T*>(out), scratch, s);
  });
}

void sum_groups_product(Dt dt, const void* dy, const void* x, void* dz, int64_t rows, int64_t groups, int64_t k,
                        double* scratch, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    const int64_t cols = groups * k;
    column_sum(ProductOf<T>{static_cast<const T*>(dy), static_cast<const T*>(x), cols}, rows, cols, k,
               static_cast<T*>(dz), scratch, s);
  });
}

void swiglu_gated_backward_dz(Dt dt, const void* dy, const void* gate, const void* up, const void* z, void* dgate,
                              void* dup, void* dz, int64_t rows, int64_t cols, double* scratch, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    // column_partials_kernel visits every (r, c) exactly once, so the elementwise writes ride along.
    column_sum(SwigluGatedBackAt<T>{static_cast<const T*>(dy), static_cast<const T*>(gate), static_cast<const T*>(up),
                                    static_cast<const T*>(z), static_cast<T*>(dgate), static_cast<T*>(dup), cols},
               rows, cols, 1, static_cast<T*>(dz), scratch, s);
  });
}

void rmsnorm(Dt dt, const void* x, const void* w, float eps, void* y, float* rstd, int64_t rows, int64_t d,
             cudaStream_t s) {
  if (rows == 0) return;
  check_rows(rows);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    rmsnorm_kernel<T><<<unsigned(rows), kRowThreads, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(w), eps,
                                                              static_cast<T*>(y), rstd, d);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void rmsnorm_backward(Dt dt, const void* dy, const void* x, const void* w, const float* rstd, void* dx, void* dw,
                      int64_t rows, int64_t d, double* scratch, cudaStream_t s) {
  check_rows(rows);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    if (rows > 0) {
      rmsnorm_dx_kernel<T><<<unsigned(rows), kRowThreads, 0, s>>>(
          static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(w), rstd, static_cast<T*>(dx), d);
      KOFF_CUDA_CHECK(cudaGetLastError());
    }
    column_sum(NormWeightGrad<T>{static_cast<const T*>(dy), static_cast<const T*>(x), rstd, d}, rows, d, 1,
               static_cast<T*>(dw), scratch, s);
  });
}

void rope(Dt dt, const void* x, const void* cos, const void* sin, bool inverse, void* out, int64_t batch, int64_t t,
          int64_t heads, int64_t head_dim, cudaStream_t s) {
  const int64_t n = batch * t * heads * (head_dim / 2);
  if (n == 0) return;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    RopeF<T> f{static_cast<const T*>(x), static_cast<const T*>(cos), static_cast<const T*>(sin), inverse ? -1.0f : 1.0f,
               static_cast<T*>(out), t, heads, head_dim};
    map_kernel<<<grid_for(n, 256), 256, 0, s>>>(n, f);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void softmax(Dt dt, const void* x, void* out, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  check_rows(rows);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    softmax_kernel<T><<<unsigned(rows), kRowThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), cols);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void softmax_backward(Dt dt, const void* dy, const void* y, void* dx, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  check_rows(rows);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    softmax_backward_kernel<T><<<unsigned(rows), kRowThreads, 0, s>>>(static_cast<const T*>(dy),
                                                                       static_cast<const T*>(y), static_cast<T*>(dx), cols);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void embedding(Dt dt, const void* table, const void* ids, bool idx64, void* out, int64_t n, int64_t vocab, int64_t d,
               int* flag, cudaStream_t s) {
  if (n * d == 0) return;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    on_index(idx64, [&](auto itag) {
      using I = decltype(itag);
      embedding_kernel<T, I><<<grid_for(n * d, 256), 256, 0, s>>>(static_cast<const T*>(table),
                                                                  static_cast<const I*>(ids), static_cast<T*>(out), n,
                                                                  vocab, d, flag);
      KOFF_CUDA_CHECK(cudaGetLastError());
    });
  });
}

void embedding_backward(Dt dt, const void* dy, const void* ids, bool idx64, void* dtable, int64_t n, int64_t vocab,
                        int64_t d, int* flag, cudaStream_t s) {
  if (n * d == 0) return;
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    on_index(idx64, [&](auto itag) {
      using I = decltype(itag);
      embedding_backward_kernel<T, I><<<grid_for(n * d, 256), 256, 0, s>>>(
          static_cast<const T*>(dy), static_cast<const I*>(ids), static_cast<T*>(dtable), n, vocab, d, flag);
      KOFF_CUDA_CHECK(cudaGetLastError());
    });
  });
}

void ce_rows(Dt xdt, const void* x, const void* targets, bool idx64, int64_t n, int64_t v, int64_t ignore_index,
             float* lse, double* row_loss, int* flag, cudaStream_t s) {
  if (n == 0) return;
  check_rows(n);
  on_dt(xdt, [&](auto tag) {
    using T = decltype(tag);
    on_index(idx64, [&](auto itag) {
      using I = decltype(itag);
      ce_rows_kernel<T, I><<<unsigned(n), 512, 0, s>>>(static_cast<const T*>(x), static_cast<const I*>(targets), v,
                                                       ignore_index, lse, row_loss, flag);
      KOFF_CUDA_CHECK(cudaGetLastError());
    });
  });
}

void ce_grad(Dt xdt, const void* x, const void* targets, bool idx64, const float* lse, int64_t n, int64_t v,
             int64_t ignore_index, float dloss, Dt gdt, void* g, void* g2_bf16, cudaStream_t s) {
  if (n == 0) return;
  check_rows(n);
  on_dt(xdt, [&](auto tag) {
    using T = decltype(tag);
    on_dt(gdt, [&](auto gtag) {
      using G = decltype(gtag);
      on_index(idx64, [&](auto itag) {
        using I = decltype(itag);
        ce_grad_kernel<T, G, I><<<unsigned(n), 512, 0, s>>>(static_cast<const T*>(x), static_cast<const I*>(targets),
                                                             lse, v, ignore_index, dloss, static_cast<G*>(g),
                                                             static_cast<bf16_t*>(g2_bf16));
        KOFF_CUDA_CHECK(cudaGetLastError());
      });
    });
  });
}

void count_targets(const void* targets, bool idx64, int64_t n, int64_t ignore_index, int64_t* count, cudaStream_t s) {
  on_index(idx64, [&](auto itag) {
    using I = decltype(itag);
    count_targets_kernel<I><<<1, 1024, 0, s>>>(static_cast<const I*>(targets), n, ignore_index, count);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void kl_rows(Dt dt, const void* x, const void* t, int64_t n, int64_t v, double* row_kl, cudaStream_t s) {
  if (n == 0) return;
  check_rows(n);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    kl_rows_kernel<T><<<unsigned(n), 512, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(t), v, row_kl);
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

void kl_grad(Dt dt, float dloss, const void* x, const void* t, int64_t n, int64_t v, void* g, cudaStream_t s) {
  if (n == 0) return;
  check_rows(n);
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    kl_grad_kernel<T><<<unsigned(n), 512, 0, s>>>(dloss, static_cast<const T*>(x), static_cast<const T*>(t), v,
                                                  static_cast<T*>(g));
    KOFF_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace koff::cuda
