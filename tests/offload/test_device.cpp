// The GPU training path without a GPU: the trainer, export and evaluation with the model on `cuda:0`
// as served by the host emulator (engine/ops/emulated_device.h), whose device pointers crash on any
// host dereference. f32 on the emulated device must train exactly what the CPU trains (the same
// kernels run underneath); bf16 compute with f32 trainables must stay close; a resumed run on the
// device must be bit-identical; and the profiler must account for the step's GEMM work.
//
// These tests check the plumbing (what lives where, in which dtype, what is copied back); the CUDA
// kernels themselves are checked op by op against the CPU backend on a GPU (tests/test_ops.cpp,
// tests/test_cuda.cpp via bench/gpu_check.sh). Where a real GPU is registered the emulator steps
// aside, and these tests then run the same checks on it.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "engine/koff/export.h"
#include "engine/koff/trainer.h"
#include "engine/ops/emulated_device.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/profile.h"
#ifdef KOFF_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace koff::offload {
namespace {

namespace fs = std::filesystem;
const Device kDev = Device::cuda(0);

// A real GPU when there is one (the CUDA backend registered), else the host emulator.
bool have_device() {
#ifdef KOFF_HAVE_CUDA
  if (cuda::register_if_available()) return true;
#endif
  return register_emulated_cuda();
}

// Cosine of the moves of two trainings' tensors away from `from` (1: the same direction).
double cosine_of_moves(const std::vector<Tensor>& a, const std::vector<Tensor>& b, double from) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto x = a[i].to_vector<double>(), y = b[i].to_vector<double>();
    for (size_t k = 0; k < x.size(); ++k) dot += (x[k] - from) * (y[k] - from), na += (x[k] - from) * (x[k] - from), nb += (y[k] - from) * (y[k] - from);
  }
  EXPECT_GT(na, 1e-6) << "the reference did not move";
  return dot / std::sqrt(std::max(na * nb, 1e-300));
}

nn::Transformer tiny_model(DType dtype, Device device) {
  nlohmann::json j = {{"model_type", "qwen2"}, {"vocab_size", 31}, {"hidden_size", 16}, {"intermediate_size", 24},
                      {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false}};
  nn::Transformer m(io::parse_config(j, "tiny"), DType::f32);
  m.init_random(5);
  if (dtype != DType::f32) {  // the same weights, rounded
    nn::Transformer r(m.config(), dtype);
    auto src = m.named_parameters(), dst = r.named_parameters();
    for (size_t i = 0; i < src.size(); ++i) const_cast<autograd::Variable&>(dst[i].second).mutable_data().copy_(src[i].second.data());
    m = std::move(r);
  }
  m.to(device);
  return m;
}

std::vector<std::vector<int32_t>> streams() {
  std::vector<std::vector<int32_t>> s(2);
  for (int64_t d = 0; d < 2; ++d)
    for (int i = 0; i < 400; ++i) s[static_cast<size_t>(d)].push_back(static_cast<int32_t>((i * (d + 3) + d * 7 + i / 5) % 31));
  return s;
}

OffloadSettings settings() {
  OffloadSettings s;
  s.target = 0.3;
  s.steps = 6;
  s.batch = 2;
  s.seq = 12;
  s.checkpoint_every = 100;
  s.recovery_steps = 2;
  s.memory.rank = 2;
  s.memory.slots = 3;
  s.lr_gates = 0.5;
  return s;
}

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("koff_test_device_" + name);
  fs::remove_all(d);
  return d;
}

struct TrainedRun {
  std::vector<double> losses;
  std::vector<Tensor> gates;  // host copies
  io::NamedTensors memory;
  FinalMask mask;
};

TrainedRun train(const nn::Transformer& base, const std::string& name, const OffloadSettings& s = settings()) {
  const fs::path dir = fresh_dir(name);
  OffloadTrainer t(base, {"x", "y"}, streams(), s, dir.string());
  TrainedRun r;
  EXPECT_TRUE(t.run([&](const StepReport& rep) {
    if (rep.message.empty()) r.losses.push_back(rep.loss);
  }));
  for (const auto& v : t.gates().parameters()) {
    EXPECT_EQ(v.data().device(), base.device()) << v.name() << " is not on the model's device";
    EXPECT_EQ(v.data().dtype(), DType::f32) << v.name() << ": trainables stay f32";
    r.gates.push_back(v.data().to(Device::cpu()));
  }
  for (auto& [n, v] : t.bank()->state()) {
    EXPECT_EQ(v.device(), base.device()) << n;
    EXPECT_EQ(v.dtype(), DType::f32) << n;
    r.memory.emplace_back(n, v.to(Device::cpu()));
  }
  r.mask = t.mask();
  fs::remove_all(dir);
  return r;
}

TEST(EmulatedDevice, HostDereferenceOfDeviceMemoryCrashes) {
#ifdef KOFF_HAVE_CUDA
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present: the emulator is for machines without one";
#endif
  if (!register_emulated_cuda()) GTEST_SKIP() << "a real GPU is registered";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Tensor t = Tensor::zeros({4}, DType::f32, kDev);
  EXPECT_EQ(t.to(Device::cpu()).to_vector<float>(), std::vector<float>(4, 0.0f));  // copies are fine
  EXPECT_DEATH({ t.data<float>()[1] = 1.0f; }, "");                              // a host write is not
  // And ops run: bf16 storage, f32 math, like the CUDA backend.
  Tensor a = Tensor::full({3}, 1.5, DType::bf16, kDev), b = Tensor::full({3}, 2.0, DType::bf16, kDev);
  EXPECT_EQ(ops::mul(a, b).to(Device::cpu()).to_vector<float>(), std::vector<float>(3, 3.0f));
}

// The gated attention op on the device (the emulator, or a real GPU's SIMT kernels, which serve every
// gated call) against the CPU in f32 on the same inputs: bf16 or f32 activations, an f32 gate [B, G]
// with one gate closed, forward (out, lse) and backward (every gradient, dmem_gate f32 on the device).
TEST(EmulatedDevice, GatedAttentionMatchesTheCpu) {
  if (!have_device()) GTEST_SKIP() << "no device";
  const int64_t B = 2, T = 7, H = 4, G = 2, hd = 16, m = 3;
  for (DType dt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f32 ? 1e-5 : 1e-2;
    auto input = [&](const Shape& shape, uint64_t salt) {  // rounded to dt, kept in f32 for the CPU
      return rand_uniform(shape, Philox(17, salt), -1, 1, DType::f32).to(dt).to(DType::f32);
    };
    Tensor q = input({B, T, H, hd}, 1), k = input({B, T, G, hd}, 2), v = input({B, T, G, hd}, 3);
    Tensor mk = input({B, m, G, hd}, 4), mv = input({B, m, G, hd}, 5), dout = input({B, T, H, hd}, 6);
    Tensor gate = Tensor::from_vector<float>({0.0f, 0.5f, 1.0f, 1.7f}, {B, G});
    auto dev = [&](const Tensor& t) { return t.to(dt).to(kDev); };
    ops::AttentionOut want = ops::attention(q, k, v, mk, mv, 0.25, true, gate);
    ops::AttentionOut got = ops::attention(dev(q), dev(k), dev(v), dev(mk), dev(mv), 0.25, true, gate.to(kDev));
    EXPECT_LT(max_rel_error(got.out.to(Device::cpu()).to(DType::f32), want.out), tol);
    EXPECT_LT(max_rel_error(got.lse.to(Device::cpu()), want.lse), tol);
    ops::AttentionGrads gw = ops::attention_backward(dout, q, k, v, mk, mv, want.out, want.lse, 0.25, true, gate);
    ops::AttentionGrads gd = ops::attention_backward(dev(dout), dev(q), dev(k), dev(v), dev(mk), dev(mv), got.out,
                                                     got.lse, 0.25, true, gate.to(kDev));
    ASSERT_EQ(gd.dmem_gate.dtype(), DType::f32);
    EXPECT_TRUE(gd.dmem_gate.device() == kDev);
    for (auto [name, a, b] : {std::tuple{"dq", gd.dq, gw.dq},
                              {"dk", gd.dk, gw.dk},
                              {"dv", gd.dv, gw.dv},
                              {"dmem_k", gd.dmem_k, gw.dmem_k},
                              {"dmem_v", gd.dmem_v, gw.dmem_v},
                              {"dmem_gate", gd.dmem_gate, gw.dmem_gate}})
      EXPECT_LT(max_rel_error(a.to(Device::cpu()).to(DType::f32), b), tol) << name;
  }
}

TEST(DeviceTraining, F32OnTheDeviceTrainsWhatTheCpuTrains) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device and no emulator";
  TrainedRun cpu = train(tiny_model(DType::f32, Device::cpu()), "cpu");
  TrainedRun dev = train(tiny_model(DType::f32, kDev), "dev");
  ASSERT_EQ(cpu.losses.size(), dev.losses.size());
  if (backend_for(Device::cuda()).host_kernels) {  // the emulator runs the CPU kernels: identical
    for (size_t i = 0; i < cpu.losses.size(); ++i) EXPECT_EQ(cpu.losses[i], dev.losses[i]) << i;
    for (size_t i = 0; i < cpu.gates.size(); ++i) EXPECT_EQ(max_abs_diff(cpu.gates[i], dev.gates[i]), 0.0) << i;
    for (size_t i = 0; i < cpu.memory.size(); ++i)
      EXPECT_EQ(max_abs_diff(cpu.memory[i].second, dev.memory[i].second), 0.0) << cpu.memory[i].first;
    EXPECT_EQ(cpu.mask.keep_neurons, dev.mask.keep_neurons);
  } else {  // a GPU sums in other orders; Adam turns near-zero gradients into steps of either sign
    for (size_t i = 0; i < cpu.losses.size(); ++i) EXPECT_NEAR(cpu.losses[i], dev.losses[i], 1e-3 * cpu.losses[i]) << i;
    EXPECT_GT(cosine_of_moves(cpu.gates, dev.gates, 3.0), 0.99);
  }
}

TEST(DeviceTraining, Bf16ComputeWithF32TrainablesStaysClose) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device and no emulator";
  TrainedRun f32 = train(tiny_model(DType::f32, kDev), "f32");
  TrainedRun b16 = train(tiny_model(DType::bf16, kDev), "bf16");
  ASSERT_EQ(f32.losses.size(), b16.losses.size());
  for (size_t i = 0; i < f32.losses.size(); ++i) {
    EXPECT_TRUE(std::isfinite(b16.losses[i]));
    EXPECT_NEAR(b16.losses[i], f32.losses[i], 0.03 * f32.losses[i]) << "step " << i;
  }
  // The gates learned in bf16 moved like the f32 ones (f32 masters: small updates are not lost). Adam
  // turns near-zero gradients into full steps of either sign, so compare the directions of the moves
  // from the init (3): their cosine over all gates.
  EXPECT_GT(cosine_of_moves(f32.gates, b16.gates, 3.0), 0.95) << "bf16 gate moves point elsewhere than the f32 ones";
}

TEST(DeviceTraining, ResumeOnTheDeviceIsBitIdentical) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device and no emulator";
  nn::Transformer base = tiny_model(DType::bf16, kDev);
  TrainedRun whole = train(base, "whole");
  const fs::path dir = fresh_dir("resumed");
  {
    std::atomic<bool> stop{false};
    OffloadTrainer t(base, {"x", "y"}, streams(), settings(), dir.string());
    EXPECT_FALSE(t.run([&](const StepReport& r) { if (r.step == 3) stop = true; }, &stop));
  }
  OffloadTrainer t(base, {"x", "y"}, streams(), settings(), dir.string());
  ASSERT_TRUE(t.run());
  auto g = t.gates().parameters();
  for (size_t i = 0; i < g.size(); ++i) EXPECT_EQ(max_abs_diff(g[i].data().to(Device::cpu()), whole.gates[i]), 0.0) << i;
  auto m = t.bank()->state();
  for (size_t i = 0; i < m.size(); ++i)
    EXPECT_EQ(max_abs_diff(m[i].second.to(Device::cpu()), whole.memory[i].second), 0.0) << m[i].first;
  fs::remove_all(dir);
}

TEST(DeviceTraining, ExportFromTheDeviceMatchesExportFromTheCpu) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device and no emulator";
  nn::Transformer cpu_base = tiny_model(DType::f32, Device::cpu()), dev_base = tiny_model(DType::f32, kDev);
  TrainedRun run = train(cpu_base, "export_mask");
  // The same mask compacts both copies of the model to the same host weights.
  nn::Transformer a = compact(cpu_base, run.mask, nlohmann::json::object());
  nn::Transformer b = compact(dev_base, run.mask, nlohmann::json::object());
  EXPECT_TRUE(b.device().is_cpu());
  auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_EQ(max_abs_diff(pa[i].second.data(), pb[i].second.data()), 0.0) << pa[i].first;
}

TEST(Profile, CountsTheStepsGemmWorkAndTimesEveryOp) {
  nn::Transformer base = tiny_model(DType::f32, Device::cpu());
  base.set_requires_grad(false);
  Tensor ids = Tensor::from_vector<int64_t>({1, 5, 9, 2, 30, 11, 7, 3}, {1, 8});
  op_counters() = {};
  profile::set_enabled(true);
  {
    autograd::Variable loss = base.loss(ids, ids, {}, 8.0);
    (void)loss.data().item();
  }
  profile::set_enabled(false);
  const OpCounters counted = op_counters();
  std::vector<profile::OpTotal> ops = profile::collect();
  ASSERT_FALSE(ops.empty());
  double gemm_flops = 0, total_ms = 0;
  bool attention = false, loss = false;
  for (const auto& o : ops) {
    EXPECT_GT(o.calls, 0);
    EXPECT_GE(o.ms, 0.0);
    EXPECT_GT(o.bytes, 0.0) << o.name;
    total_ms += o.ms;
    if (o.name == "gemm" || o.name == "linear_cross_entropy") gemm_flops += o.flops;  // what op_counters counts
    attention = attention || (o.name == "attention" && o.flops > 0);
    loss = loss || (o.name == "linear_cross_entropy" && o.flops == 2.0 * 8 * 31 * 16);
  }
  EXPECT_EQ(gemm_flops, static_cast<double>(counted.gemm_flops)) << "the profile's product FLOPs are the op layer's";
  EXPECT_TRUE(attention);
  EXPECT_TRUE(loss);
  EXPECT_TRUE(profile::collect().empty()) << "collect() forgets what it returned";
  const std::string table = profile::format_step_profile(ops, total_ms + 1, 8, {1e9, 1e9, 64, "f32"}, "cpu f32");
  EXPECT_NE(table.find("MFU"), std::string::npos);
  EXPECT_NE(table.find("attention"), std::string::npos);
}

}  // namespace
}  // namespace koff::offload
