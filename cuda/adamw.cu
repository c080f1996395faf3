// AdamW, f32 or bf16 state with f32 math, in place over param, m and v: with step t (from 1),
//   p = p (1 - lr wd);  m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2;
//   p -= lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// in the CPU kernel's order of operations (engine/cpu/adamw.h); the host folds the step's scalars
// (AdamWScalars). One tensor: a grid-stride map. Many f32 tensors (a KOFF step's trainables are
// hundreds of small LoRA, gate and memory tensors): one launch per 64 tensors, blockIdx.y picking the
// tensor. Memory-bound: read p g m v, write p m v.
#include <cmath>
#include <string>
#include <vector>

#include "cuda/backend.h"
#include "cuda/common.cuh"
#include "cuda/patterns.cuh"

namespace koff::cuda {

namespace {

// The step's scalars, folded on the host (adamw_scalars): decay = 1 - lr wd, step_size = lr / (1 - beta1^t),
// sqrt_bias_correction2 = sqrt(1 - beta2^t).
struct AdamWScalars {
  float decay, beta2, one_minus_beta1, one_minus_beta2, step_size, sqrt_bias_correction2, eps;
};
// Multi-tensor AdamW over f32 tensors: one launch for a list of (param, grad, m, v, n).
struct AdamWChunk {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t n;
};

// AdamW, the CPU kernel's order of operations (engine/cpu/adamw.h) in f32.
__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, const AdamWScalars& c) {
  p = p * c.decay;
  m = m + c.one_minus_beta1 * (g - m);
  v = c.beta2 * v + c.one_minus_beta2 * g * g;
  p -= c.step_size * m / (sqrtf(v) / c.sqrt_bias_correction2 + c.eps);
}
template <typename T>
struct AdamWF {
  T* param;
  const T* grad;
  T* m;
  T* v;
  AdamWScalars c;
  __device__ void operator()(int64_t i) const {
    float p = ld(param, i), mi = ld(m, i), vi = ld(v, i);
    adamw_one(p, ld(grad, i), mi, vi, c);
    st(param, i, p);
    st(m, i, mi);
    st(v, i, vi);
  }
};

// Multi-tensor AdamW: blockIdx.y picks the tensor, blockIdx.x strides over it.
constexpr int kAdamWMaxChunks = 64;
struct AdamWChunkList {
  AdamWChunk c[kAdamWMaxChunks];
};
__global__ void adamw_multi_kernel(AdamWChunkList list, AdamWScalars c) {
  const AdamWChunk& t = list.c[blockIdx.y];
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < t.n; i += stride) {
    float p = t.param[i], m = t.m[i], v = t.v[i];
    adamw_one(p, t.grad[i], m, v, c);
    t.param[i] = p;
    t.m[i] = m;
    t.v[i] = v;
  }
}

// ---- launchers -------------------------------------------------------------------------------
void adamw(Dt dt, void* param, const void* grad, void* m, void* v, int64_t n, const AdamWScalars& c, cudaStream_t s) {
  on_dt(dt, [&](auto tag) {
    using T = decltype(tag);
    launch_map(n, AdamWF<T>{static_cast<T*>(param), static_cast<const T*>(grad), static_cast<T*>(m), static_cast<T*>(v), c},
               s);
  });
}
void adamw_multi(const AdamWChunk* chunks, int count, const AdamWScalars& c, cudaStream_t s) {
  for (int first = 0; first < count; first += kAdamWMaxChunks) {
    AdamWChunkList list{};
    const int k = count - first < kAdamWMaxChunks ? count - first : kAdamWMaxChunks;
    int64_t largest = 0;
    for (int i = 0; i < k; ++i) {
      list.c[i] = chunks[first + i];
      largest = list.c[i].n > largest ? list.c[i].n : largest;
    }
    if (largest == 0) continue;
    const unsigned gx = grid_for(largest, 256) < 1024 ? grid_for(largest, 256) : 1024;
    adamw_multi_kernel<<<dim3(gx, unsigned(k)), 256, 0, s>>>(list, c);
    KOFF_CUDA_CHECK(cudaGetLastError());
  }
}

AdamWScalars adamw_scalars(const AdamWConfig& c, int64_t step) {
  const double t = static_cast<double>(step);
  return {float(1.0 - c.lr * c.weight_decay), float(c.beta2),
          float(1.0 - c.beta1),               float(1.0 - c.beta2),
          float(c.lr / (1.0 - std::pow(c.beta1, t))), float(std::sqrt(1.0 - std::pow(c.beta2, t))),
          float(c.eps)};
}

// ---- the Backend entries ---------------------------------------------------------------------

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config, int64_t step) {
  OpScope op("adamw", param);
  adamw(dt_of(param, "adamw_step_"), mptr(param), cptr(grad), mptr(m), mptr(v), param.numel(),
        adamw_scalars(config, step), op.s());
}

// f32 tensors: one launch per 64 of them; otherwise one adamw per tensor.
void adamw_multi(const std::vector<Tensor*>& params, const std::vector<const Tensor*>& grads,
                 const std::vector<Tensor*>& m, const std::vector<Tensor*>& v, const AdamWConfig& config,
                 int64_t step) {
  bool f32 = true;
  for (const Tensor* p : params) f32 = f32 && p->dtype() == DType::f32;
  if (!f32) {
    for (size_t i = 0; i < params.size(); ++i) adamw(*params[i], *grads[i], *m[i], *v[i], config, step);
    return;
  }
  if (!(params.size() == grads.size() && params.size() == m.size() && params.size() == v.size()))
    throw Error("adamw_multi: " + std::to_string(params.size()) + " params, " + std::to_string(grads.size()) +
                " grads, " + std::to_string(m.size()) + " m, " + std::to_string(v.size()) + " v");
  if (!(step >= 1)) throw Error("adamw_multi: step counts from 1, got " + std::to_string(step));
  if (params.empty()) return;
  std::vector<AdamWChunk> chunks;
  const Device dev = params[0]->device();
  for (size_t i = 0; i < params.size(); ++i) {
    for (const Tensor* t : {static_cast<const Tensor*>(params[i]), grads[i], static_cast<const Tensor*>(m[i]),
                            static_cast<const Tensor*>(v[i])}) {
      if (!(t->device() == dev && t->dtype() == DType::f32 && t->is_contiguous() && t->numel() == params[i]->numel()))
        throw Error("adamw_multi: tensor " + std::to_string(i) + " must be a contiguous f32 tensor of " +
                    std::to_string(params[i]->numel()) + " elements on " + dev.str());
    }
    chunks.push_back({params[i]->data<float>(), grads[i]->data<float>(), m[i]->data<float>(), v[i]->data<float>(),
                      params[i]->numel()});
  }
  OpScope op("adamw_multi", *params[0]);
  adamw_multi(chunks.data(), static_cast<int>(chunks.size()), adamw_scalars(config, step), op.s());
}

}  // namespace

void fill_adamw(Backend& b) {
  b.adamw = adamw;
  b.adamw_multi = adamw_multi;
}

}  // namespace koff::cuda
