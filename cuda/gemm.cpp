// GEMMs through cuBLASLt (the math, layouts and plan cache: cuda/gemm.h): the gemm entry, one batched
// (strided) GEMM per call, or one GEMM over the stacked rows when every batch shares B; linear, the
// [M, K] x [N, K]^T product with its bias fused into cuBLASLt's epilogue. f32 runs f32 compute (no
// TF32), bf16 accumulates in f32. Host code: no kernels of ours.
#include "cuda/gemm.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "cuda/backend.h"
#include "cuda/check.h"

namespace koff::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

cudaDataType_t lt_type(Dt dt) { return dt == Dt::f32 ? CUDA_R_32F : CUDA_R_16BF; }

// Largest power of two (up to 256) dividing the address: cuBLASLt's heuristic must know it.
uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && (v % a) != 0) a >>= 1;
  return a;
}

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// The last two fields: bias epilogue on, and the bias pointer's alignment (0 without a bias), which
// the heuristic reads from the descriptor's bias pointer.
using Key = std::tuple<int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                      int64_t, int64_t, uint32_t, uint32_t, uint32_t, bool, bool, uint32_t>;

struct DeviceState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<Key, std::unique_ptr<Plan>> plans;
};

class GemmContext {
 public:
  static GemmContext& get() {
    static GemmContext* ctx = new GemmContext;  // never destroyed: the driver may be gone at exit
    return *ctx;
  }

  DeviceState& device(int d) {
    auto& st = devices_[d];
    if (!st.handle) {
      KOFF_CUBLAS_CHECK(cublasLtCreate(&st.handle));
      KOFF_CUDA_CHECK(cudaMalloc(&st.workspace, kWorkspaceBytes));  // once per device, never on the hot path
    }
    return st;
  }
  std::mutex mutex;

 private:
  std::map<int, DeviceState> devices_;
};

void set_batch(cublasLtMatrixLayout_t l, int64_t batch, int64_t stride) {
  const int32_t count = static_cast<int32_t>(batch);
  KOFF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
  KOFF_CUBLAS_CHECK(
      cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
}

std::string describe(const GemmArgs& g) {
  return "M=" + std::to_string(g.m) + " N=" + std::to_string(g.n) + " K=" + std::to_string(g.k) +
         " batch=" + std::to_string(g.batch) + (g.trans_a ? " A^T" : "") + (g.trans_b ? " B^T" : "") +
         (g.ab_dt == Dt::f32 ? " f32" : " bf16");
}

Plan& plan_for(DeviceState& st, const GemmArgs& g, uint32_t al_a, uint32_t al_b, uint32_t al_c, const void* bias) {
  const bool beta_zero = g.beta == 0.0f;
  const uint32_t al_bias = bias ? alignment_of(bias) : 0;
  Key key{int(g.ab_dt), int(g.c_dt), g.trans_a, g.trans_b, g.m, g.n, g.k, g.batch, g.lda, g.ldb, g.ldc,
          g.stride_a, g.stride_b, g.stride_c, al_a, al_b, al_c, beta_zero, bias != nullptr, al_bias};
  auto it = st.plans.find(key);
  if (it != st.plans.end()) return *it->second;

  auto p = std::make_unique<Plan>();
  KOFF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major view: D^T [N, M] = op(B)^T [N, K] op(A)^T [K, M]; Lt's "A" is our B and vice versa.
  const cublasOperation_t op_lt_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_lt_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  KOFF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a, sizeof(op_lt_a)));
  KOFF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b, sizeof(op_lt_b)));
  if (bias) {  // bias[n] down the N rows of the column-major D^T [N, M], broadcast over its M columns
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const int32_t bias_type = lt_type(g.c_dt);
    KOFF_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    KOFF_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    // The heuristic takes the bias alignment from this pointer; each call sets its own (same alignment).
    KOFF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  const uint64_t a_rows = g.trans_b ? g.k : g.n, a_cols = g.trans_b ? g.n : g.k;  // stored B, column-major
  const uint64_t b_rows = g.trans_a ? g.m : g.k, b_cols = g.trans_a ? g.k : g.m;  // stored A, column-major
  KOFF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, lt_type(g.ab_dt), a_rows, a_cols, g.ldb));
  KOFF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, lt_type(g.ab_dt), b_rows, b_cols, g.lda));
  KOFF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, lt_type(g.c_dt), uint64_t(g.n), uint64_t(g.m), g.ldc));
  if (g.batch > 1) {
    set_batch(p->la, g.batch, g.stride_b);
    set_batch(p->lb, g.batch, g.stride_a);
    set_batch(p->lc, g.batch, g.stride_c);
  }
  cublasLtMatmulPreference_t pref = nullptr;
  KOFF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  cublasStatus_t st1 =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_b, sizeof(al_b));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_a, sizeof(al_a));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t st2 = cublasLtMatmulAlgoGetHeuristic(st.handle, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &result,
                                                      &found);
  cublasLtMatmulPreferenceDestroy(pref);
  KOFF_CUBLAS_CHECK(st1);
  KOFF_CUBLAS_CHECK(st2);
  if (found == 0) throw Error("cuBLASLt has no algorithm for the GEMM " + describe(g) + (bias ? " with bias" : ""));
  p->algo = result.algo;
  Plan& ref = *p;
  st.plans.emplace(key, std::move(p));
  return ref;
}

}  // namespace

void gemm(const GemmArgs& g, const void* a, const void* b, void* c, int device, cudaStream_t stream, const void* bias) {
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  if (g.batch > INT32_MAX) throw Error("gemm: batch " + std::to_string(g.batch) + " exceeds cuBLASLt's int32 count");
  GemmContext& ctx = GemmContext::get();
  std::lock_guard<std::mutex> lock(ctx.mutex);
  DeviceState& st = ctx.device(device);
  // al_a/al_b/al_c: alignment of our A, B, C pointers (Lt's B, A, C).
  Plan& p = plan_for(st, g, alignment_of(a), alignment_of(b), alignment_of(c), bias);
  if (bias)
    KOFF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  KOFF_CUBLAS_CHECK(cublasLtMatmul(st.handle, p.op, &g.alpha, b, p.la, a, p.lb, &g.beta, c, p.lc, c, p.lc, &p.algo,
                                   st.workspace, kWorkspaceBytes, stream));
}

// ---- the Backend entries ---------------------------------------------------------------------
namespace {

void gemm(const Tensor& a, const Tensor& b, Tensor& c, int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a,
          bool trans_b, bool b_shared, double alpha, double beta) {
  OpScope op("gemm", a);
  const Dt dt = dt_of(a, "matmul");
  if (batch * m * n == 0) return;
  if (k == 0) {  // the product of empty sums: C = beta C
    if (beta == 0.0) KOFF_CUDA_CHECK(cudaMemsetAsync(c.raw_data(), 0, c.nbytes(), op.s()));
    else KOFF_CHECK(beta == 1.0, "gemm: K = 0 with beta {} (only 0 or 1)", beta);
    return;
  }
  GemmArgs g;
  g.alpha = static_cast<float>(alpha);
  g.beta = static_cast<float>(beta);
  g.ab_dt = g.c_dt = dt;
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.m = m, g.n = n, g.k = k;
  g.lda = trans_a ? m : k;
  g.ldb = trans_b ? k : n;
  g.ldc = n;
  const size_t es = dtype_size(a.dtype());
  if (b_shared && !trans_a) {  // one GEMM over the stacked rows of every batch, as on the CPU
    g.m = batch * m;
    gemm(g, cptr(a), cptr(b), mptr(c), op.device(), op.s());
  } else if (b_shared) {  // A^T per batch against one B: a loop (rare: only some gradients take it)
    for (int64_t i = 0; i < batch; ++i)
      gemm(g, static_cast<const char*>(cptr(a)) + i * m * k * es, cptr(b), static_cast<char*>(mptr(c)) + i * m * n * es,
           op.device(), op.s());
  } else {
    g.batch = batch;
    g.stride_a = m * k;
    g.stride_b = k * n;
    g.stride_c = m * n;
    gemm(g, cptr(a), cptr(b), mptr(c), op.device(), op.s());
  }
}

// out [M, N] = x2d [M, K] w [N, K]^T + bias[N], the bias added by cuBLASLt's epilogue (f32, before
// the output is rounded) instead of a second pass over out. Without a bias, the plain gemm.
void linear(const Tensor& x2d, const Tensor& w, const Tensor& bias, Tensor& out) {
  const int64_t m = x2d.size(0), k = x2d.size(1), n = w.size(0);
  if (!bias.defined()) {
    gemm(x2d, w, out, 1, m, n, k, false, true, true, 1.0, 0.0);
    return;
  }
  OpScope op("linear", x2d);
  const Dt dt = dt_of(x2d, "linear");
  if (m * n == 0) return;
  if (k == 0) {  // an empty product: every row is the bias
    KOFF_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), op.s()));
    add_bias(dt, cptr(out), cptr(bias), mptr(out), m, n, op.s());
    return;
  }
  GemmArgs g;
  g.ab_dt = g.c_dt = dt;
  g.trans_b = true;
  g.m = m, g.n = n, g.k = k;
  g.lda = k, g.ldb = k, g.ldc = n;
  gemm(g, cptr(x2d), cptr(w), mptr(out), op.device(), op.s(), cptr(bias));
}

// Independent GEMMs: queued one after another on the stream (each a cuBLASLt call).
void gemm_many(const std::vector<const Tensor*>& a, const std::vector<const Tensor*>& b, const std::vector<Tensor*>& c,
               const std::vector<GemmShape>& shapes) {
  for (size_t i = 0; i < shapes.size(); ++i) {
    const GemmShape& s = shapes[i];
    gemm(*a[i], *b[i], *c[i], 1, s.m, s.n, s.k, s.trans_a, s.trans_b, true, s.alpha, s.beta);
  }
}

}  // namespace

void fill_gemm(Backend& b) {
  b.gemm = gemm;
  b.gemm_many = gemm_many;
  b.linear = linear;
}

}  // namespace koff::cuda
