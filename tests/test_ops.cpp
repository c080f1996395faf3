// The op harness (in the spirit of ggml's test-backend-ops): ONE table of ops. For each op:
//   1. forward in f64 against a naive f64 reference (tests/reference.h)   rel. error < 1e-12
//   2. forward in f32 against the same reference                          rel. error < 1e-5
//   3. backward against central finite differences in f64                 (autograd/gradcheck)
//   4. every other registered backend (CUDA when present) against the CPU backend, forward and
//      backward, in f32 (rel. error < 1e-5) and in bf16 (< 1e-2, against the CPU in f32 on the same
//      bf16-rounded inputs), with every device allocation poisoned (NaN) first and NaN never passing;
//      skipped where no such backend is present.
// A new op is one entry in cases(); a new backend needs nothing here.
//
// Inputs are fresh random numbers each run; the seed is printed on failure and can be fixed with
// KOFF_TEST_SEED=N.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "engine/ops/dispatch.h"
#include "engine/tensor/random.h"
#include "tests/reference.h"

#ifdef KOFF_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace koff {
namespace {

namespace ag = autograd;
using ag::Variable;
using Vars = std::vector<Variable>;
using Tensors = std::vector<Tensor>;

uint64_t test_seed() {
  static uint64_t seed = [] {
    if (const char* s = std::getenv("KOFF_TEST_SEED")) return static_cast<uint64_t>(std::strtoull(s, nullptr, 10));
    return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }();
  return seed;
}

struct InputSpec {
  Shape shape;
  bool grad = true;
  double lo = -1, hi = 1;
};

struct OpCase {
  std::string name;
  std::vector<InputSpec> inputs;
  // Non-differentiable extras (ids, targets, uniforms), made from the case's random stream.
  std::function<Tensors(const Philox&)> aux = [](const Philox&) { return Tensors{}; };
  std::function<Variable(const Vars&, const Tensors&)> forward;
  std::function<Tensor(const Tensors&, const Tensors&)> reference;  // f64 in, f64 out
};

// gtest prints a test's parameter in its name; the case name is all a reader needs.
void PrintTo(const OpCase& op, std::ostream* os) { *os << op.name; }

Tensor ids_tensor(const Philox& rng, const Shape& shape, int64_t n, uint64_t first, DType dtype = DType::i64) {
  std::vector<int64_t> flat(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = static_cast<int64_t>(rng.bits(first + i) % static_cast<uint64_t>(n));
  Tensor f = Tensor::from_vector(flat, shape);
  return f.to(dtype);
}

Tensor scalar_ref(double v) { return Tensor::full({}, v, DType::f64); }

std::vector<OpCase> cases() {
  std::vector<OpCase> c;
  auto binary = [&](const char* name, BinaryOp kind, auto fn) {
    c.push_back({name, {{{3, 4}}, {{3, 4}}}, {}, [fn](const Vars& v, const Tensors&) { return fn(v[0], v[1]); },
                 [kind](const Tensors& x, const Tensors&) { return ref::elementwise(x[0], x[1], kind); }});
  };
  binary("add", BinaryOp::add, [](auto& a, auto& b) { return ag::add(a, b); });
  binary("sub", BinaryOp::sub, [](auto& a, auto& b) { return ag::sub(a, b); });
  binary("mul", BinaryOp::mul, [](auto& a, auto& b) { return ag::mul(a, b); });
  c.push_back({"scale", {{{2, 5}}}, {}, [](const Vars& v, const Tensors&) { return ag::scale(v[0], -1.75); },
               [](const Tensors& x, const Tensors&) { return ref::elementwise(x[0], Tensor::full(x[0].shape(), -1.75, DType::f64), BinaryOp::mul); }});
  c.push_back({"add_bias", {{{2, 3, 5}}, {{5}}}, {},
               [](const Vars& v, const Tensors&) { return ag::add_bias(v[0], v[1]); },
               [](const Tensors& x, const Tensors&) {
                 return ref::elementwise(x[0], x[1].expand(x[0].shape()).contiguous(), BinaryOp::add);
               }});
  c.push_back({"sum", {{{4, 3}}}, {}, [](const Vars& v, const Tensors&) { return ag::sum(v[0]); },
               [](const Tensors& x, const Tensors&) {
                 double s = 0;
                 for (double e : x[0].to_vector<double>()) s += e;
                 return scalar_ref(s);
               }});
  c.push_back({"dot", {{{3, 5}}, {{3, 5}}}, {}, [](const Vars& v, const Tensors&) { return ag::dot(v[0], v[1]); },
               [](const Tensors& x, const Tensors&) {
                 double s = 0;
                 auto a = x[0].to_vector<double>(), b = x[1].to_vector<double>();
                 for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
                 return scalar_ref(s);
               }});
  auto groups = [&](const char* name, Shape xs, int64_t g, int64_t k) {
    c.push_back({name, {{xs}, {{g}, true, 0, 1}}, {},
                 [k](const Vars& v, const Tensors&) { return ag::mul_groups(v[0], v[1], k); },
                 [g, k](const Tensors& x, const Tensors&) {
                   Tensor out = ref::f64(x[0]).clone();
                   for (int64_t i = 0; i < out.numel(); ++i) out.data<double>()[i] *= x[1].data<double>()[(i / k) % g];
                   return out;
                 }});
  };
  groups("mul_groups_heads", {2, 3, 4, 5}, 4, 5);
  groups("mul_groups_neurons", {2, 3, 6}, 6, 1);

  auto mm = [&](std::string name, Shape as, Shape bs, bool ta, bool tb) {
    c.push_back({name, {{as}, {bs}}, {},
                 [ta, tb](const Vars& v, const Tensors&) { return ag::matmul(v[0], v[1], ta, tb); },
                 [ta, tb](const Tensors& x, const Tensors&) { return ref::matmul(x[0], x[1], ta, tb); }});
  };
  mm("matmul", {3, 4}, {4, 5}, false, false);
  mm("matmul_ta", {4, 3}, {4, 5}, true, false);
  mm("matmul_tb", {3, 4}, {5, 4}, false, true);
  mm("matmul_ta_tb", {4, 3}, {5, 4}, true, true);
  mm("matmul_batched", {2, 3, 4}, {2, 4, 5}, false, false);
  mm("matmul_batched_tb", {2, 3, 4}, {2, 5, 4}, false, true);
  mm("matmul_shared_b", {2, 3, 4}, {4, 5}, false, false);
  mm("matmul_shared_b_ta", {2, 4, 3}, {4, 5}, true, false);
  mm("matmul_shared_b_tb", {2, 3, 4}, {5, 4}, false, true);
  c.push_back({"linear_bias", {{{2, 3, 4}}, {{5, 4}}, {{5}}}, {},
               [](const Vars& v, const Tensors&) { return ag::linear(v[0], v[1], v[2]); },
               [](const Tensors& x, const Tensors&) {
                 Tensor y = ref::matmul(x[0], x[1], false, true);
                 return ref::elementwise(y, x[2].expand(y.shape()).contiguous(), BinaryOp::add);
               }});
  c.push_back({"linear", {{{3, 4}}, {{5, 4}}}, {}, [](const Vars& v, const Tensors&) { return ag::linear(v[0], v[1]); },
               [](const Tensors& x, const Tensors&) { return ref::matmul(x[0], x[1], false, true); }});

  // The projection with per-domain LoRA in one node: sequences of domains 2, 0, 0, 1 (three runs),
  // rank 2, scale 2 (autograd::linear_lora; on CUDA its GEMMs accumulate with beta = 1).
  c.push_back({"linear_lora", {{{4, 2, 3}}, {{5, 3}}, {{5}}, {{3, 6}}, {{3, 10}}}, {},
               [](const Vars& v, const Tensors&) {
                 return ag::linear_lora(v[0], v[1], v[2], v[3], v[4], ag::lora_groups({2, 0, 0, 1}), 2, 2.0);
               },
               [](const Tensors& in, const Tensors&) {
                 const Tensor x = ref::f64(in[0]), w = ref::f64(in[1]), bias = ref::f64(in[2]);
                 const Tensor a = ref::f64(in[3]), b = ref::f64(in[4]);
                 const int64_t domain[] = {2, 0, 0, 1};
                 Tensor y = Tensor::zeros({4, 2, 5}, DType::f64);
                 for (int64_t s = 0; s < 4; ++s)
                   for (int64_t t = 0; t < 2; ++t)
                     for (int64_t o = 0; o < 5; ++o) {
                       double v = bias.data<double>()[o];
                       for (int64_t i = 0; i < 3; ++i) v += x.data<double>()[(s * 2 + t) * 3 + i] * w.data<double>()[o * 3 + i];
                       for (int64_t j = 0; j < 2; ++j) {
                         double u = 0;
                         for (int64_t i = 0; i < 3; ++i)
                           u += x.data<double>()[(s * 2 + t) * 3 + i] * a.data<double>()[domain[s] * 6 + j * 3 + i];
                         v += 2.0 * u * b.data<double>()[domain[s] * 10 + o * 2 + j];
                       }
                       y.data<double>()[(s * 2 + t) * 5 + o] = v;
                     }
                 return y;
               }});

  for (DType id_type : {DType::i64, DType::i32}) {
    c.push_back({id_type == DType::i64 ? "embedding_i64" : "embedding_i32", {{{7, 4}}},
                 [id_type](const Philox& r) { return Tensors{ids_tensor(r, {2, 3}, 7, 1000, id_type)}; },
                 [](const Vars& v, const Tensors& a) { return ag::embedding(v[0], a[0]); },
                 [](const Tensors& x, const Tensors& a) {
                   Tensor out = Tensor::empty({2, 3, 4}, DType::f64);
                   for (int64_t i = 0; i < 6; ++i)
                     for (int64_t e = 0; e < 4; ++e)
                       out.data<double>()[i * 4 + e] = x[0].at({static_cast<int64_t>(a[0].flatten().at({i})), e});
                   return out;
                 }});
  }
  c.push_back({"rmsnorm", {{{2, 3, 8}}, {{8}}}, {}, [](const Vars& v, const Tensors&) { return ag::rmsnorm(v[0], v[1], 1e-5); },
               [](const Tensors& x, const Tensors&) { return ref::rmsnorm(x[0], x[1], 1e-5); }});
  for (bool scaled : {false, true}) {
    ops::RopeScaling s;
    if (scaled) s = {8.0, 1.0, 4.0, 64};  // small original context so all three frequency bands occur
    c.push_back({scaled ? "rope_llama3" : "rope", {{{2, 3, 2, 16}}}, {},
                 [s](const Vars& v, const Tensors&) {
                   // Tables are made in f32/f64 on the host, then cast and moved to x's dtype and device.
                   const DType table_dtype = v[0].dtype() == DType::f64 ? DType::f64 : DType::f32;
                   auto tables = ops::rope_tables(5, 3, 16, 10000.0, s, table_dtype);
                   const Device device = v[0].data().device();
                   tables.cos = tables.cos.to(v[0].dtype()).to(device);
                   tables.sin = tables.sin.to(v[0].dtype()).to(device);
                   return ag::rope(v[0], tables);
                 },
                 [s](const Tensors& x, const Tensors&) { return ref::rope(x[0], 5, ref::rope_inv_freq(16, 10000.0, s)); }});
  }
  c.push_back({"silu", {{{3, 5}, true, -4, 4}}, {}, [](const Vars& v, const Tensors&) { return ag::silu(v[0]); },
               [](const Tensors& x, const Tensors&) {
                 Tensor y = ref::f64(x[0]).clone();
                 for (int64_t i = 0; i < y.numel(); ++i) y.data<double>()[i] *= ref::sigmoid(y.data<double>()[i]);
                 return y;
               }});
  c.push_back({"swiglu", {{{2, 3, 5}, true, -4, 4}, {{2, 3, 5}}}, {},
               [](const Vars& v, const Tensors&) { return ag::swiglu(v[0], v[1]); },
               [](const Tensors& x, const Tensors&) {
                 Tensor g = ref::f64(x[0]), u = ref::f64(x[1]), y = Tensor::empty(g.shape(), DType::f64);
                 for (int64_t i = 0; i < y.numel(); ++i) {
                   double a = g.data<double>()[i];
                   y.data<double>()[i] = a * ref::sigmoid(a) * u.data<double>()[i];
                 }
                 return y;
               }});
  // SwiGLU with the neuron gate fused in, against the composition swiglu then mul_groups. The second
  // shape has > 64 rows and > 32 columns: several row chunks and column tiles of the CUDA column
  // reduction that makes dz.
  auto gated = [&](const char* name, Shape s) {
    const int64_t f = s.back();
    c.push_back({name, {{s, true, -4, 4}, {s}, {{f}, true, 0, 1}}, {},
                 [](const Vars& v, const Tensors&) { return ag::swiglu_gated(v[0], v[1], v[2]); },
                 [f](const Tensors& x, const Tensors&) {
                   Tensor g = ref::f64(x[0]), u = ref::f64(x[1]), z = ref::f64(x[2]);
                   Tensor m = Tensor::empty(g.shape(), DType::f64);
                   for (int64_t i = 0; i < m.numel(); ++i) {
                     const double a = g.data<double>()[i];
                     m.data<double>()[i] = a * ref::sigmoid(a) * u.data<double>()[i];
                   }
                   for (int64_t i = 0; i < m.numel(); ++i) m.data<double>()[i] *= z.data<double>()[i % f];
                   return m;
                 }});
  };
  gated("swiglu_gated", {2, 3, 5});
  gated("swiglu_gated_rows", {2, 40, 36});
  c.push_back({"softmax", {{{3, 6}, true, -3, 3}}, {}, [](const Vars& v, const Tensors&) { return ag::softmax(v[0]); },
               [](const Tensors& x, const Tensors&) { return ref::softmax(x[0]); }});

  // attention: B=2, H=4 query heads over G=2 KV heads, hd=4, m memory slots
  // gated: a memory gate [B, G] in (0.1, 1.5) as a sixth input (finite differences need g > 0 on both sides).
  auto attn = [&](std::string name, int64_t tq, int64_t tk, int64_t m, bool causal, bool gated = false) {
    std::vector<InputSpec> in = {{{2, tq, 4, 4}}, {{2, tk, 2, 4}}, {{2, tk, 2, 4}}};
    if (m) {
      in.push_back({{2, m, 2, 4}});
      in.push_back({{2, m, 2, 4}});
    }
    if (gated) in.push_back({{2, 2}, true, 0.1, 1.5});
    c.push_back({name,
                 in,
                 {},
                 [m, causal, gated](const Vars& v, const Tensors&) {
                   return ag::attention(v[0], v[1], v[2], m ? v[3] : Variable(), m ? v[4] : Variable(), 0.5, causal,
                                        gated ? v[5] : Variable());
                 },
                 [m, causal, gated](const Tensors& x, const Tensors&) {
                   return ref::attention(x[0], x[1], x[2], m ? x[3] : Tensor(), m ? x[4] : Tensor(), 0.5, causal,
                                         gated ? x[5] : Tensor());
                 }});
  };
  attn("attention_causal", 4, 4, 0, true);
  attn("attention_memory", 4, 4, 3, true);
  attn("attention_memory_decode", 2, 5, 3, true);  // queries at the end of a longer key sequence
  attn("attention_memory_full", 3, 3, 2, false);
  attn("attention_memory_gated", 4, 4, 3, true, true);
  attn("attention_memory_gated_decode", 2, 5, 3, true, true);
  attn("attention_memory_gated_full", 3, 3, 2, false, true);

  c.push_back({"cross_entropy", {{{6, 7}, true, -3, 3}},
               [](const Philox& r) {
                 Tensor t = ids_tensor(r, {6}, 7, 2000);
                 t.set({2}, static_cast<double>(ops::kIgnoreIndex));
                 return Tensors{t};
               },
               [](const Vars& v, const Tensors& a) { return ag::cross_entropy(v[0], a[0]); },
               [](const Tensors& x, const Tensors& a) {
                 return scalar_ref(ref::cross_entropy_sum(x[0], a[0], ops::kIgnoreIndex) / 5.0);
               }});
  c.push_back({"linear_cross_entropy", {{{6, 4}, true, -2, 2}, {{7, 4}, true, -2, 2}},
               [](const Philox& r) {
                 Tensor t = ids_tensor(r, {6}, 7, 3000);
                 t.set({4}, static_cast<double>(ops::kIgnoreIndex));
                 return Tensors{t};
               },
               // chunk 4 < 6 rows: exercises the chunk loop and its tail
               [](const Vars& v, const Tensors& a) { return ag::linear_cross_entropy(v[0], v[1], a[0], 0, 4); },
               [](const Tensors& x, const Tensors& a) {
                 return scalar_ref(ref::cross_entropy_sum(ref::matmul(x[0], x[1], false, true), a[0], ops::kIgnoreIndex) / 5.0);
               }});
  c.push_back({"kl_div", {{{5, 7}, true, -3, 3}},
               [](const Philox& r) { return Tensors{rand_uniform({5, 7}, r, -3.0, 3.0, DType::f64, 5000)}; },
               [](const Vars& v, const Tensors& a) { return ag::kl_div(v[0], a[0].to(v[0].dtype()), 4.0); },
               [](const Tensors& x, const Tensors& a) {
                 // sum_r sum_j p_t (log p_t - log p_s), from the definition
                 Tensor ps = ref::softmax(x[0]), pt = ref::softmax(a[0]);
                 double kl = 0;
                 for (int64_t i = 0; i < ps.numel(); ++i) {
                   const double t = pt.data<double>()[i], s = ps.data<double>()[i];
                   kl += t * (std::log(t) - std::log(s));
                 }
                 return scalar_ref(kl / 4.0);
               }});
  c.push_back({"hard_concrete_sample", {{{12}, true, -3, 3}},
               [](const Philox& r) { return Tensors{rand_uniform({12}, r, 0.0, 1.0, DType::f64, 4000)}; },
               [](const Vars& v, const Tensors& a) { return ag::hard_concrete_sample(v[0], a[0].to(v[0].dtype())); },
               [](const Tensors& x, const Tensors& a) {
                 Tensor z = Tensor::empty({12}, DType::f64);
                 for (int64_t i = 0; i < 12; ++i) z.data<double>()[i] = ref::hard_concrete_sample(x[0].at({i}), a[0].at({i}));
                 return z;
               }});
  c.push_back({"hard_concrete_p_open", {{{9}, true, -4, 4}}, {},
               [](const Vars& v, const Tensors&) { return ag::hard_concrete_p_open(v[0]); },
               [](const Tensors& x, const Tensors&) {
                 Tensor p = Tensor::empty({9}, DType::f64);
                 for (int64_t i = 0; i < 9; ++i) p.data<double>()[i] = ref::hard_concrete_p_open(x[0].at({i}));
                 return p;
               }});
  return c;
}

class OpHarness : public ::testing::TestWithParam<OpCase> {
 protected:
  void SetUp() override {
    const OpCase& op = GetParam();
    uint64_t seed = test_seed() ^ std::hash<std::string>{}(op.name);
    Philox rng(seed, 0);
    trace_ = fmt::format("seed {} (KOFF_TEST_SEED={})", seed, test_seed());
    for (size_t i = 0; i < op.inputs.size(); ++i) {
      const auto& spec = op.inputs[i];
      inputs64_.push_back(rand_uniform(spec.shape, Philox(seed, 1 + i), spec.lo, spec.hi, DType::f64));
    }
    if (op.aux) aux_ = op.aux(rng);
  }
  Vars make_vars(DType dtype, Device device = Device::cpu()) const {
    Vars v;
    for (size_t i = 0; i < inputs64_.size(); ++i)
      v.emplace_back(inputs64_[i].to(dtype).to(device), GetParam().inputs[i].grad, fmt::format("x{}", i));
    return v;
  }
  Tensors aux_on(Device device) const {
    Tensors a;
    for (const auto& t : aux_) a.push_back(t.to(device));
    return a;
  }
  Tensors inputs64_, aux_;
  std::string trace_;
};

TEST_P(OpHarness, ForwardF64MatchesReference) {
  SCOPED_TRACE(trace_);
  Tensor got = GetParam().forward(make_vars(DType::f64), aux_).data();
  Tensor want = GetParam().reference(inputs64_, aux_);
  ASSERT_EQ(shape_str(got.shape()), shape_str(want.shape()));
  EXPECT_FALSE(has_non_finite(got));
  EXPECT_LT(max_rel_error(got, want), 1e-12);
}

TEST_P(OpHarness, ForwardF32MatchesReference) {
  SCOPED_TRACE(trace_);
  Tensor got = GetParam().forward(make_vars(DType::f32), aux_).data();
  EXPECT_EQ(got.dtype(), DType::f32);
  Tensor want = GetParam().reference(inputs64_, aux_);
  EXPECT_FALSE(has_non_finite(got));
  EXPECT_LT(max_rel_error(got, want), 1e-5);
}

TEST_P(OpHarness, GradientMatchesFiniteDifferences) {
  SCOPED_TRACE(trace_);
  Vars vars = make_vars(DType::f64);
  const OpCase& op = GetParam();
  // Reduce the output to a scalar with fixed random weights so every output element matters.
  Tensor probe = op.forward(vars, aux_).data();
  Tensor w = rand_uniform(probe.shape(), Philox(test_seed(), 99), -1, 1, DType::f64);
  auto f = [&](const Vars& v) { return ag::dot(op.forward(v, aux_), Variable(w)); };
  ag::GradcheckResult r = ag::gradcheck(f, vars, 1e-6, 1e-8, 1e-5);
  EXPECT_TRUE(r.ok) << r.first_failure << " (max rel error " << r.max_rel_error << ")";
  EXPECT_GT(r.checked, 0);
}

// Every backend other than the CPU against the CPU backend, forward and backward. bf16 runs are
// compared with the CPU in f32 on the same bf16-rounded inputs (the CPU backend has no bf16).
Tensor round_bf16(const Tensor& t) {
  return is_floating(t.dtype()) ? t.to(DType::f32).to(DType::bf16).to(DType::f32).to(t.dtype()) : t;
}

#ifdef KOFF_HAVE_CUDA
// Every device block handed out during the comparison starts as NaN (0xFF bytes).
struct PoisonAllocations {
  PoisonAllocations() { cuda::set_poison_allocations(true); }
  ~PoisonAllocations() { cuda::set_poison_allocations(false); }
};
#endif

TEST_P(OpHarness, BackendsMatchCpu) {
#ifdef KOFF_HAVE_CUDA
  cuda::register_if_available();
  PoisonAllocations poison;
#endif
  if (!has_backend(DeviceType::CUDA)) GTEST_SKIP() << "no CUDA backend/GPU present: nothing to compare";
  SCOPED_TRACE(trace_);
  const OpCase& op = GetParam();
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const bool bf = dtype == DType::bf16;
    const double tol = bf ? 1e-2 : 1e-5;
    Vars cpu, dev = make_vars(dtype, Device::cuda(0));
    Tensors aux_cpu = aux_;
    if (bf) {
      for (size_t i = 0; i < inputs64_.size(); ++i)
        cpu.emplace_back(round_bf16(inputs64_[i]).to(DType::f32), op.inputs[i].grad, fmt::format("x{}", i));
      for (auto& t : aux_cpu) t = round_bf16(t);
    } else {
      cpu = make_vars(dtype);
    }
    Tensors aux_dev;
    for (const auto& t : aux_cpu) aux_dev.push_back(t.to(Device::cuda(0)));
    Variable out_cpu = op.forward(cpu, aux_cpu), out_dev = op.forward(dev, aux_dev);
    Tensor got = out_dev.data().to(Device::cpu()).to(DType::f32), want = out_cpu.data().to(DType::f32);
    ASSERT_EQ(shape_str(got.shape()), shape_str(want.shape()));
    EXPECT_FALSE(has_non_finite(got));
    EXPECT_LT(max_rel_error(got, want), tol);
    Tensor w = rand_uniform(out_cpu.data().shape(), Philox(test_seed(), 98), -1, 1, DType::f32);
    if (bf) w = round_bf16(w);
    ag::dot(out_cpu, Variable(w.to(out_cpu.data().dtype()))).backward();
    ag::dot(out_dev, Variable(w.to(out_dev.data().dtype()).to(Device::cuda(0)))).backward();
    for (size_t i = 0; i < cpu.size(); ++i) {
      if (!cpu[i].requires_grad()) continue;
      ASSERT_TRUE(dev[i].grad().defined()) << "input " << i;
      Tensor g = dev[i].grad().to(Device::cpu()).to(DType::f32);
      EXPECT_FALSE(has_non_finite(g)) << "input " << i;
      // The CUDA embedding backward adds in the CPU's order (cuda/embedding.cu): f32 gradients are bitwise equal.
      if (!bf && op.name.rfind("embedding", 0) == 0)
        EXPECT_EQ(max_rel_error(g, cpu[i].grad().to(DType::f32)), 0.0) << "input " << i;
      else
        EXPECT_LT(max_rel_error(g, cpu[i].grad().to(DType::f32)), tol) << "input " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpHarness, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) { return info.param.name; });

// ---- checks outside the table -----------------------------------------------------------------

TEST(OpHarnessExtra, RopeInverseFrequenciesMatchDefinition) {
  for (ops::RopeScaling s : {ops::RopeScaling{}, ops::RopeScaling{8.0, 1.0, 4.0, 8192}, ops::RopeScaling{32.0, 1.0, 4.0, 8192}}) {
    auto got = ops::rope_inv_freq(128, 500000.0, s);
    auto want = ref::rope_inv_freq(128, 500000.0, s);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i] / want[i], 1.0, 1e-6) << "index " << i;
  }
}

TEST(OpHarnessExtra, AdamWMatchesDefinition) {
  Philox rng(test_seed(), 7);
  Tensor p = randn({5, 3}, rng, DType::f64, 1.0, 0), g = randn({5, 3}, rng, DType::f64, 1.0, 100);
  Tensor m = Tensor::zeros({5, 3}, DType::f64), v = Tensor::zeros({5, 3}, DType::f64);
  ops::AdamWConfig cfg{0.01, 0.9, 0.95, 1e-8, 0.1};
  std::vector<double> P = p.to_vector<double>(), M(15, 0), V(15, 0);
  for (int64_t step = 1; step <= 3; ++step) {
    ops::adamw_step_(p, g, m, v, cfg, step);
    auto G = g.to_vector<double>();
    for (size_t i = 0; i < 15; ++i) {
      P[i] -= cfg.lr * cfg.weight_decay * P[i];
      M[i] = cfg.beta1 * M[i] + (1 - cfg.beta1) * G[i];
      V[i] = cfg.beta2 * V[i] + (1 - cfg.beta2) * G[i] * G[i];
      double mh = M[i] / (1 - std::pow(cfg.beta1, step)), vh = V[i] / (1 - std::pow(cfg.beta2, step));
      P[i] -= cfg.lr * mh / (std::sqrt(vh) + cfg.eps);
    }
  }
  auto got = p.to_vector<double>();
  for (size_t i = 0; i < 15; ++i) EXPECT_NEAR(got[i], P[i], 1e-12);
}

// The fused op against the ops it replaces, swiglu then mul_groups, values and gradients (the backward
// of the composition: dm = mul_groups(dy, z), swiglu_backward(dm), dz = sum_groups_product(dy, m)).
// The shape is large enough for the CPU kernels' OpenMP paths.
TEST(OpHarnessExtra, SwigluGatedMatchesSwigluThenMulGroups) {
  const Shape s{4, 64, 160};
  const int64_t f = 160;
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f64 ? 1e-13 : 1e-6;
    Tensor g = rand_uniform(s, Philox(test_seed(), 31), -4, 4, dt),
           u = rand_uniform(s, Philox(test_seed(), 32), -1, 1, dt);
    Tensor z = rand_uniform({f}, Philox(test_seed(), 33), 0, 1, dt),
           dy = rand_uniform(s, Philox(test_seed(), 34), -1, 1, dt);
    Tensor m = ops::swiglu(g, u);
    Tensor y = ops::swiglu_gated(g, u, z);
    EXPECT_EQ(y.dtype(), dt);
    EXPECT_LT(max_rel_error(y, ops::mul_groups(m, z, 1)), tol);
    ops::SwigluGrads want = ops::swiglu_backward(ops::mul_groups(dy, z, 1), g, u);
    Tensor want_dz = ops::sum_groups_product(dy, m, f, 1);
    ops::SwigluGatedGrads got = ops::swiglu_gated_backward(dy, g, u, z);
    ASSERT_TRUE(got.dz.defined());
    EXPECT_EQ(shape_str(got.dz.shape()), shape_str(z.shape()));
    EXPECT_LT(max_rel_error(got.dgate, want.dgate), tol);
    EXPECT_LT(max_rel_error(got.dup, want.dup), tol);
    EXPECT_LT(max_rel_error(got.dz, want_dz), tol);
    ops::SwigluGatedGrads constant_z = ops::swiglu_gated_backward(dy, g, u, z, /*want_dz=*/false);
    EXPECT_FALSE(constant_z.dz.defined());
    EXPECT_LT(max_rel_error(constant_z.dgate, want.dgate), tol);
    EXPECT_LT(max_rel_error(constant_z.dup, want.dup), tol);
  }
}

// Strided inputs are made contiguous, and a z that does not match the last dim is refused.
TEST(OpHarnessExtra, SwigluGatedTakesViewsAndChecksZ) {
  Tensor g = rand_uniform({5, 6}, Philox(test_seed(), 41), -3, 3, DType::f64);
  Tensor u = rand_uniform({5, 6}, Philox(test_seed(), 42), -1, 1, DType::f64);
  Tensor z = rand_uniform({5}, Philox(test_seed(), 43), 0, 1, DType::f64);
  Tensor gt = g.t(), ut = u.t();  // [6, 5] views, gated over their last dim (5)
  Tensor want = ops::mul_groups(ops::swiglu(gt.contiguous(), ut.contiguous()), z, 1);
  EXPECT_LT(max_rel_error(ops::swiglu_gated(gt, ut, z), want), 1e-15);
  EXPECT_THROW(ops::swiglu_gated(g, u, z), Error);                   // [5, 6] with z [5]
  EXPECT_THROW(ops::swiglu_gated(gt, ut, z.view({5, 1})), Error);    // z not 1-D
  EXPECT_THROW(ops::swiglu_gated(gt, ut, z.to(DType::f32)), Error);  // dtype
  EXPECT_THROW(ops::swiglu_gated_backward(gt, gt, ut, Tensor::ones({6}, DType::f64)), Error);
}

// ag::swiglu_gated against ag::mul_groups(ag::swiglu(...)) for each pattern of which inputs require a
// gradient: a constant z (the fused backward skips dz), frozen activations (dz alone), one input.
TEST(OpHarnessExtra, SwigluGatedAutogradMatchesComposition) {
  struct Needs {
    bool gate, up, z;
  };
  Tensor g = rand_uniform({3, 7, 9}, Philox(test_seed(), 51), -4, 4, DType::f64);
  Tensor u = rand_uniform({3, 7, 9}, Philox(test_seed(), 52), -1, 1, DType::f64);
  Tensor z = rand_uniform({9}, Philox(test_seed(), 53), 0, 1, DType::f64);
  Tensor w = rand_uniform({3, 7, 9}, Philox(test_seed(), 54), -1, 1, DType::f64);
  for (Needs n : {Needs{true, true, true}, Needs{true, true, false}, Needs{false, false, true},
                  Needs{true, false, false}, Needs{false, true, true}}) {
    SCOPED_TRACE(fmt::format("gate {} up {} z {}", n.gate, n.up, n.z));
    auto run = [&](bool fused) {
      Variable vg(g, n.gate), vu(u, n.up), vz(z, n.z);
      Variable y = fused ? ag::swiglu_gated(vg, vu, vz) : ag::mul_groups(ag::swiglu(vg, vu), vz, 1);
      ag::dot(y, Variable(w)).backward();
      return Tensors{y.data(), vg.grad(), vu.grad(), vz.grad()};
    };
    Tensors got = run(true), want = run(false);
    EXPECT_LT(max_rel_error(got[0], want[0]), 1e-14);
    const bool needs[3] = {n.gate, n.up, n.z};
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(got[1 + i].defined(), needs[i]) << "input " << i;
      if (needs[i]) {
        EXPECT_LT(max_rel_error(got[1 + i], want[1 + i]), 1e-13) << "input " << i;
      }
    }
  }
}

// linear with W a transposed view of a contiguous [in, out] takes the plain GEMM (no copy) and still
// adds the bias; the backend's linear takes W stored [out, in]. Both count one GEMM.
TEST(OpHarnessExtra, LinearBiasWithStoredAndTransposedWeights) {
  Tensor x = rand_uniform({2, 3, 4}, Philox(test_seed(), 61), -1, 1, DType::f64);
  Tensor w = rand_uniform({5, 4}, Philox(test_seed(), 62), -1, 1, DType::f64);
  Tensor b = rand_uniform({5}, Philox(test_seed(), 63), -1, 1, DType::f64);
  Tensor want = ref::matmul(x, w, false, true);
  want = ref::elementwise(want, b.expand(want.shape()).contiguous(), BinaryOp::add);
  Tensor wt_view = w.t().contiguous().t();  // [5, 4], stored as [4, 5]
  ASSERT_FALSE(wt_view.is_contiguous());
  for (const Tensor& weight : {w, wt_view}) {
    const OpCounters before = op_counters();
    Tensor y = ops::linear(x, weight, b);
    EXPECT_EQ(op_counters().gemm - before.gemm, 1);
    EXPECT_EQ(op_counters().gemm_flops - before.gemm_flops, 2 * 6 * 5 * 4);
    EXPECT_EQ(shape_str(y.shape()), "[2, 3, 5]");
    EXPECT_LT(max_rel_error(y, want), 1e-14);
  }
  EXPECT_THROW(ops::linear(x, w, Tensor::ones({4}, DType::f64)), Error);
}

// gemm_many_into is gemm_into call by call: skinny (LoRA-shaped, run side by side on the CPU) and
// large (one at a time) lists, transposed operands, alpha and beta = 1 accumulation into row slices of
// one output; f32 (the side-by-side path is the f32 training path) and f64.
TEST(OpHarnessExtra, GemmManyMatchesGemmIntoOneByOne) {
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t big : {0, 1}) {
      const int64_t rows = big ? 512 : 96, in = big ? 256 : 40, r = big ? 256 : 8;
      Tensor x = rand_uniform({rows, in}, Philox(test_seed(), 71), -1, 1, dt);
      Tensor a = rand_uniform({3, r, in}, Philox(test_seed(), 72), -1, 1, dt);
      Tensor dy = rand_uniform({rows, r}, Philox(test_seed(), 73), -1, 1, dt);
      Tensor u0 = rand_uniform({rows, r}, Philox(test_seed(), 74), -1, 1, dt);
      Tensor da0 = rand_uniform({3, r, in}, Philox(test_seed(), 75), -1, 1, dt);
      const std::vector<std::pair<int64_t, int64_t>> parts = {{0, rows / 4}, {rows / 4, rows / 2}, {rows / 2, rows}};
      // u_g = 0.5 x_g A_g^T + u_g (accumulate into slices), dA_g = dy_g^T x_g + dA_g (trans_a)
      Tensor u_one = u0.clone(), u_many = u0.clone(), da_one = da0.clone(), da_many = da0.clone();
      std::vector<ops::GemmInto> calls;
      for (size_t g = 0; g < parts.size(); ++g) {
        const auto [lo, hi] = parts[g];
        const int64_t gi = static_cast<int64_t>(g);
        Tensor uo = u_one.slice(0, lo, hi), dao = da_one.select(0, gi);
        ops::gemm_into(x.slice(0, lo, hi), a.select(0, gi), uo, false, true, 0.5, 1.0);
        ops::gemm_into(dy.slice(0, lo, hi), x.slice(0, lo, hi), dao, true, false, 1.0, 1.0);
        calls.push_back({x.slice(0, lo, hi), a.select(0, gi), u_many.slice(0, lo, hi), false, true, 0.5, 1.0});
        calls.push_back({dy.slice(0, lo, hi), x.slice(0, lo, hi), da_many.select(0, gi), true, false, 1.0, 1.0});
      }
      const OpCounters before = op_counters();
      ops::gemm_many_into(calls);
      EXPECT_EQ(op_counters().gemm - before.gemm, 6);
      const double tol = dt == DType::f32 ? 1e-6 : 1e-14;
      EXPECT_LE(max_rel_error(u_many, u_one), tol) << dtype_name(dt) << " big " << big;
      EXPECT_LE(max_rel_error(da_many, da_one), tol) << dtype_name(dt) << " big " << big;
      EXPECT_GT(max_abs_diff(u_many, u0), 0.1);  // it did write
    }
  }
  Tensor x = Tensor::ones({4, 3}, DType::f32), bad = Tensor::zeros({4, 5}, DType::f32);
  EXPECT_THROW(ops::gemm_many_into({{x, x, bad, false, true, 1.0, 0.0}}), Error);  // [4,3] x [3,4] is not [4,5]
}

double max_abs(const Tensor& t) { return max_abs_diff(t, Tensor::zeros(t.shape(), t.dtype())); }

// The memory gate's two ends: g = 0 is attention without the memory (out and lse, to rounding; the
// q/k/v gradients too, the memory's are 0), g = 1 is the ungated op bit for bit; and a mixed gate
// gives each sequence of the batch its own (sequence 0 closed, sequence 1 open).
TEST(OpHarnessExtra, AttentionGateZeroHidesTheMemoryAndOneIsUngated) {
  const int64_t B = 2, T = 6, H = 4, G = 2, hd = 8, m = 3;
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f64 ? 1e-14 : 1e-6;
    Tensor q = rand_uniform({B, T, H, hd}, Philox(test_seed(), 71), -1, 1, dt);
    Tensor k = rand_uniform({B, T, G, hd}, Philox(test_seed(), 72), -1, 1, dt);
    Tensor v = rand_uniform({B, T, G, hd}, Philox(test_seed(), 73), -1, 1, dt);
    Tensor mk = rand_uniform({B, m, G, hd}, Philox(test_seed(), 74), -2, 2, dt);
    Tensor mv = rand_uniform({B, m, G, hd}, Philox(test_seed(), 75), -1, 1, dt);
    Tensor dout = rand_uniform({B, T, H, hd}, Philox(test_seed(), 76), -1, 1, dt);
    const double scale = 0.4;
    const Tensor zero = Tensor::zeros({B, G}, dt), one = Tensor::ones({B, G}, dt);

    ops::AttentionOut plain = ops::attention(q, k, v, {}, {}, scale);
    ops::AttentionOut closed = ops::attention(q, k, v, mk, mv, scale, true, zero);
    EXPECT_LT(max_rel_error(closed.out, plain.out), tol);
    EXPECT_LT(max_rel_error(closed.lse, plain.lse), tol);
    ops::AttentionGrads gp = ops::attention_backward(dout, q, k, v, {}, {}, plain.out, plain.lse, scale);
    ops::AttentionGrads gc = ops::attention_backward(dout, q, k, v, mk, mv, closed.out, closed.lse, scale, true, zero);
    EXPECT_LT(max_rel_error(gc.dq, gp.dq), tol);
    EXPECT_LT(max_rel_error(gc.dk, gp.dk), tol);
    EXPECT_LT(max_rel_error(gc.dv, gp.dv), tol);
    EXPECT_EQ(max_abs(gc.dmem_k), 0.0);
    EXPECT_EQ(max_abs(gc.dmem_v), 0.0);
    ASSERT_TRUE(gc.dmem_gate.defined());
    EXPECT_EQ(shape_str(gc.dmem_gate.shape()), "[2, 2]");
    EXPECT_GT(max_abs(gc.dmem_gate), 1e-6) << "a closed gate must still get a gradient";

    ops::AttentionOut mem = ops::attention(q, k, v, mk, mv, scale);
    ops::AttentionOut open = ops::attention(q, k, v, mk, mv, scale, true, one);
    EXPECT_EQ(max_abs_diff(open.out, mem.out), 0.0);
    EXPECT_EQ(max_abs_diff(open.lse, mem.lse), 0.0);
    ops::AttentionGrads gm = ops::attention_backward(dout, q, k, v, mk, mv, mem.out, mem.lse, scale);
    ops::AttentionGrads go = ops::attention_backward(dout, q, k, v, mk, mv, open.out, open.lse, scale, true, one);
    for (auto [got, want] :
         {std::pair{go.dq, gm.dq}, {go.dk, gm.dk}, {go.dv, gm.dv}, {go.dmem_k, gm.dmem_k}, {go.dmem_v, gm.dmem_v}})
      EXPECT_EQ(max_abs_diff(got, want), 0.0);

    Tensor mixed = Tensor::from_vector<double>({0, 0, 1, 1}, {B, G}).to(dt);
    ops::AttentionOut mx = ops::attention(q, k, v, mk, mv, scale, true, mixed);
    EXPECT_LT(max_rel_error(mx.out.select(0, 0).contiguous(), plain.out.select(0, 0).contiguous()), tol);
    EXPECT_EQ(max_abs_diff(mx.out.select(0, 1).contiguous(), mem.out.select(0, 1).contiguous()), 0.0);
  }
}

// dL/dg at g = 0 (where central differences would step to g < 0) against a one-sided difference in
// f64, and against the closed form sum (e^{s_m} / Z) (dO . v_m - dO . O) from the definition.
TEST(OpHarnessExtra, AttentionGateGradientAtZeroMatchesOneSidedDifference) {
  const int64_t B = 2, T = 5, H = 4, G = 2, hd = 4, m = 3;
  const DType dt = DType::f64;
  Tensor q = rand_uniform({B, T, H, hd}, Philox(test_seed(), 81), -1, 1, dt);
  Tensor k = rand_uniform({B, T, G, hd}, Philox(test_seed(), 82), -1, 1, dt);
  Tensor v = rand_uniform({B, T, G, hd}, Philox(test_seed(), 83), -1, 1, dt);
  Tensor mk = rand_uniform({B, m, G, hd}, Philox(test_seed(), 84), -1, 1, dt);
  Tensor mv = rand_uniform({B, m, G, hd}, Philox(test_seed(), 85), -1, 1, dt);
  Tensor w = rand_uniform({B, T, H, hd}, Philox(test_seed(), 86), -1, 1, dt);
  const double scale = 0.5, h = 1e-7;
  Tensor gate = Tensor::zeros({B, G}, dt);
  auto loss = [&](const Tensor& g) { return ops::dot(ops::attention(q, k, v, mk, mv, scale, true, g).out, w).item(); };
  ops::AttentionOut r = ops::attention(q, k, v, mk, mv, scale, true, gate);
  ops::AttentionGrads gr = ops::attention_backward(w, q, k, v, mk, mv, r.out, r.lse, scale, true, gate);
  const double l0 = loss(gate);
  for (int64_t i = 0; i < B * G; ++i) {
    Tensor gh = gate.clone();
    gh.data<double>()[i] = h;
    const double fd = (loss(gh) - l0) / h, got = gr.dmem_gate.data<double>()[i];
    EXPECT_NEAR(got, fd, 1e-5 * std::max(1.0, std::abs(fd))) << "gate " << i;
  }
  // The closed form: the ungated memory probabilities against the closed gate's output and lse.
  std::vector<double> want(static_cast<size_t>(B * G), 0.0);
  const double* Q = q.data<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t g = hh / (H / G), row = (b * T + t) * H + hh;
        double dO_O = 0;
        for (int64_t e = 0; e < hd; ++e) dO_O += w.data<double>()[row * hd + e] * r.out.data<double>()[row * hd + e];
        for (int64_t j = 0; j < m; ++j) {
          double s = 0, dO_v = 0;
          for (int64_t e = 0; e < hd; ++e) {
            s += Q[row * hd + e] * mk.data<double>()[((b * m + j) * G + g) * hd + e];
            dO_v += w.data<double>()[row * hd + e] * mv.data<double>()[((b * m + j) * G + g) * hd + e];
          }
          want[static_cast<size_t>(b * G + g)] += std::exp(s * scale - r.lse.data<double>()[row]) * (dO_v - dO_O);
        }
      }
  for (int64_t i = 0; i < B * G; ++i) EXPECT_NEAR(gr.dmem_gate.data<double>()[i], want[static_cast<size_t>(i)], 1e-12);
  // A gate in another dtype is taken in the statistics dtype, its gradient comes back in its own.
  ops::AttentionGrads g32 = ops::attention_backward(w, q, k, v, mk, mv, r.out, r.lse, scale, true, gate.to(DType::f32));
  EXPECT_EQ(g32.dmem_gate.dtype(), DType::f32);
  EXPECT_THROW(ops::attention(q, k, v, mk, mv, scale, true, Tensor::zeros({B, G + 1}, dt)), Error);
}

TEST(OpHarnessExtra, HardConcreteDeterministicValue) {
  Tensor la = Tensor::from_vector<double>({-10, -1, 0, 1, 3, 10}, {6});
  auto z = ops::hard_concrete_deterministic(la).to_vector<double>();
  for (int i = 0; i < 6; ++i) {
    double want = std::clamp(ref::sigmoid(la.at({i})) * 1.2 - 0.1, 0.0, 1.0);
    EXPECT_NEAR(z[i], want, 1e-15);
  }
  EXPECT_EQ(z[4], 1.0);  // log_alpha = 3 (the init) gives a fully open gate
}

}  // namespace
}  // namespace koff
