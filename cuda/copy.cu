// The strided, dtype-converting copy that Tensor::copy_ uses on the GPU (the caching allocator's
// copy_strided, cuda/allocator.cpp); not an op family. One grid-stride loop over the elements of the
// shape: each thread turns its flat index into the source and destination offsets (up to kMaxCopyDims
// dims, strides in elements) and copies the element, converting through double when the dtypes
// differ (same dtype: a bit copy of its width). Memory-bound.
#include <cuda_fp16.h>

#include "cuda/backend.h"
#include "cuda/common.cuh"

namespace koff::cuda {

namespace {

struct CopyGeometry {
  int64_t shape[kMaxCopyDims], sstr[kMaxCopyDims], dstr[kMaxCopyDims];
  int ndim;
};

// dtype codes: koff::DType order f32, f64, bf16, f16, i32, i64.
__device__ __forceinline__ double load_any(const void* p, int dt, int64_t i) {
  switch (dt) {
    case 0: return static_cast<const float*>(p)[i];
    case 1: return static_cast<const double*>(p)[i];
    case 2: return __bfloat162float(static_cast<const bf16_t*>(p)[i]);
    case 3: return __half2float(static_cast<const __half*>(p)[i]);
    case 4: return static_cast<const int32_t*>(p)[i];
    default: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
  }
}
__device__ __forceinline__ void store_any(void* p, int dt, int64_t i, double v) {
  switch (dt) {
    case 0: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case 1: static_cast<double*>(p)[i] = v; break;
    case 2: static_cast<bf16_t*>(p)[i] = __float2bfloat16(static_cast<float>(v)); break;
    case 3: static_cast<__half*>(p)[i] = __float2half(static_cast<float>(v)); break;
    case 4: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    default: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
  }
}
__device__ __forceinline__ int elem_size(int dt) { return dt == 1 || dt == 5 ? 8 : (dt == 2 || dt == 3 ? 2 : 4); }

__global__ void strided_copy_kernel(char* dst, int ddt, const char* src, int sdt, CopyGeometry g, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const bool same = ddt == sdt;
  const int es = elem_size(sdt);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    int64_t rem = i, so = 0, dof = 0;
    for (int d = g.ndim - 1; d >= 0; --d) {
      const int64_t idx = rem % g.shape[d];
      rem /= g.shape[d];
      so += idx * g.sstr[d];
      dof += idx * g.dstr[d];
    }
    if (same) {
      if (es == 8) reinterpret_cast<int64_t*>(dst)[dof] = reinterpret_cast<const int64_t*>(src)[so];
      else if (es == 4) reinterpret_cast<int32_t*>(dst)[dof] = reinterpret_cast<const int32_t*>(src)[so];
      else reinterpret_cast<int16_t*>(dst)[dof] = reinterpret_cast<const int16_t*>(src)[so];
    } else {
      store_any(dst, ddt, dof, load_any(src, sdt, so));
    }
  }
}

}  // namespace

void strided_copy(void* dst, int dst_dtype, const int64_t* dst_strides, const void* src, int src_dtype,
                  const int64_t* src_strides, const int64_t* shape, int ndim, int64_t offset_dst, int64_t offset_src,
                  cudaStream_t s) {
  CopyGeometry g{};
  g.ndim = ndim;
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) {
    g.shape[d] = shape[d];
    g.sstr[d] = src_strides[d];
    g.dstr[d] = dst_strides[d];
    n *= shape[d];
  }
  if (n == 0) return;
  const int64_t des = int64_t(dst_dtype == 1 || dst_dtype == 5 ? 8 : (dst_dtype == 2 || dst_dtype == 3 ? 2 : 4));
  const int64_t ses = int64_t(src_dtype == 1 || src_dtype == 5 ? 8 : (src_dtype == 2 || src_dtype == 3 ? 2 : 4));
  strided_copy_kernel<<<grid_for(n, 256), 256, 0, s>>>(static_cast<char*>(dst) + offset_dst * des, dst_dtype,
                                                        static_cast<const char*>(src) + offset_src * ses, src_dtype, g,
                                                        n);
  KOFF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace koff::cuda
