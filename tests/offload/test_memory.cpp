// Memories through the whole model: domain routing, and gradients of log_alpha, LoRA and KV against
// finite differences in f64 on a tiny Llama and a tiny Qwen 3.
#include <gtest/gtest.h>

#include <functional>

#include "autograd/gradcheck.h"
#include "engine/koff/gates.h"
#include "engine/koff/memory.h"

namespace koff::offload {
namespace {

namespace ag = autograd;

io::ModelConfig tiny(const std::string& type) {
  nlohmann::json j = {{"model_type", type}, {"vocab_size", 23}, {"hidden_size", 16}, {"intermediate_size", 12},
                      {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0}, {"tie_word_embeddings", type == "qwen3"}};
  if (type == "qwen3") j["head_dim"] = 4;
  return io::parse_config(j, "tiny " + type);
}

Tensor ids(int64_t B, int64_t T, int64_t salt) {
  std::vector<int64_t> v(static_cast<size_t>(B * T));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int64_t>((i * 5 + 3 + salt) % 23);
  return Tensor::from_vector(v, {B, T});
}

TEST(Memory, EachSequenceUsesItsOwnDomainsMemory) {
  nn::Transformer model(tiny("llama"), DType::f64);
  model.init_random(1);
  MemoryConfig mc;
  mc.slots = 3;
  MemoryBank bank(model, mc, {"a", "b", "c"}, 5);
  // Non-zero LoRA B so that LoRA matters too.
  for (auto v : bank.lora_parameters()) v.mutable_data().copy_(rand_uniform(v.shape(), Philox(9, 1), -0.1, 0.1, DType::f64));
  Tensor domain_ids = Tensor::from_vector<int64_t>({0, 2}, {2});
  Tensor x = ids(2, 5, 0), y = ids(2, 5, 1);
  auto per_sequence_loss = [&](int64_t b) {
    auto hooks = bank.hooks(domain_ids);
    nn::ForwardOptions fo;
    fo.hooks = &hooks;
    ag::NoGradGuard g;
    Tensor l = model.logits(x, fo).data().select(0, b).contiguous();
    return ops::cross_entropy(l, y.select(0, b).contiguous()).loss_sum.item();
  };
  const double a0 = per_sequence_loss(0), c0 = per_sequence_loss(1);
  // Change domain b's memory (used by nobody) and domain c's (used by sequence 1 only).
  for (auto* layer : {&bank.layers()[0], &bank.layers()[1]}) {
    layer->kv_k.mutable_data().select(0, 1).fill_(0.7);
    for (auto& [p, b] : layer->lora_b) b.mutable_data().select(0, 1).fill_(0.3);
  }
  EXPECT_EQ(per_sequence_loss(0), a0);
  EXPECT_EQ(per_sequence_loss(1), c0);
  for (auto* layer : {&bank.layers()[0], &bank.layers()[1]}) layer->kv_k.mutable_data().select(0, 2).fill_(0.7);
  EXPECT_EQ(per_sequence_loss(0), a0) << "sequence 0 (domain a) must not see domain c's memory";
  EXPECT_NE(per_sequence_loss(1), c0);
}

// autograd::linear_lora (the projection and its per-domain LoRA in one node, one GEMM pair per run of
// one domain, the product added in place) against the composite it replaced (per-sequence gathers of
// A and B, batched matmuls, the scale on B, an add), in f64: forward and every gradient to rounding,
// on runs that repeat a domain non-consecutively (domains 2, 0, 0, 1, 0: four runs, domain 0 twice).
TEST(Memory, LinearLoraMatchesThePerSequenceFormulaAndFiniteDifferences) {
  const int64_t B = 5, T = 3, in = 6, out = 7, r = 2, D = 3;
  const double scale = 2.0;
  auto param = [](const Shape& shape, uint64_t salt) {
    return ag::Variable(rand_uniform(shape, Philox(21, salt), -0.5, 0.5, DType::f64), true);
  };
  ag::Variable x = param({B, T, in}, 1), w = param({out, in}, 2), bias = param({out}, 3);
  ag::Variable a = param({D, r * in}, 4), b = param({D, out * r}, 5);
  const std::vector<int64_t> domains = {2, 0, 0, 1, 0};
  const auto groups = ag::lora_groups(domains);
  ASSERT_EQ(groups.size(), 4u);
  EXPECT_EQ(groups[1].begin, 1);
  EXPECT_EQ(groups[1].end, 3);
  const Tensor ids = Tensor::from_vector(domains, {B});
  const Tensor probe = rand_uniform({B, T, out}, Philox(21, 6), -1, 1, DType::f64);  // a random linear loss
  auto fused = [&] { return ag::linear_lora(x, w, bias, a, b, groups, r, scale); };
  auto composite = [&] {
    ag::Variable ad = ag::reshape(ag::embedding(a, ids), {B, r, in});
    ag::Variable bd = ag::scale(ag::reshape(ag::embedding(b, ids), {B, out, r}), scale);
    return ag::add(ag::linear(x, w, bias), ag::matmul(ag::matmul(x, ad, false, true), bd, false, true));
  };
  std::vector<Tensor> grads[2];
  Tensor outputs[2];
  int i = 0;
  for (const auto& f : {std::function<ag::Variable()>(fused), std::function<ag::Variable()>(composite)}) {
    for (auto* v : {&x, &w, &bias, &a, &b}) v->zero_grad();
    ag::Variable y = f();
    outputs[i] = y.data();
    ag::dot(y, ag::Variable(probe)).backward();
    for (auto* v : {&x, &w, &bias, &a, &b}) grads[i].push_back(v->grad());
    ++i;
  }
  EXPECT_LE(max_abs_diff(outputs[0], outputs[1]), 1e-13);
  const char* names[] = {"x", "w", "bias", "A table", "B table"};
  for (size_t k = 0; k < 5; ++k) EXPECT_LE(max_abs_diff(grads[0][k], grads[1][k]), 1e-13) << names[k];
  // Finite differences through the fused node itself:
  auto loss = [&](const std::vector<ag::Variable>&) { return ag::dot(fused(), ag::Variable(probe)); };
  ag::GradcheckResult res = ag::gradcheck(loss, {x, w, bias, a, b}, 1e-6, 1e-9, 1e-6);
  EXPECT_TRUE(res.ok) << res.first_failure;
  EXPECT_EQ(res.checked, B * T * in + out * in + out + D * r * in + D * out * r);
}

class WholeModelGradients : public ::testing::TestWithParam<std::string> {};

TEST_P(WholeModelGradients, LogAlphaLoraAndKvMatchFiniteDifferences) {
  nn::Transformer model(tiny(GetParam()), DType::f64);
  model.init_random(2);
  MemoryConfig mc;
  mc.slots = 2;
  mc.rank = 2;
  mc.targets = {Proj::q, Proj::v, Proj::o, Proj::up, Proj::down};
  MemoryBank bank(model, mc, {"a", "b"}, 3);
  for (auto v : bank.lora_parameters()) v.mutable_data().copy_(rand_uniform(v.shape(), Philox(4, 2), -0.3, 0.3, DType::f64));
  HardConcreteGates gates(unit_costs(model.config()), 0.5, DType::f64);
  Tensor domain_ids = Tensor::from_vector<int64_t>({1, 0}, {2});
  Tensor x = ids(2, 4, 0), y = ids(2, 4, 2);

  // Checked: layer 0's gate log_alphas, a LoRA A and B of layer 1, layer 0's KV memory.
  std::vector<ag::Variable> checked = {gates.head_log_alpha()[0], gates.neuron_log_alpha()[0],
                                       bank.layers()[1].lora_a.at(Proj::v), bank.layers()[1].lora_b.at(Proj::down),
                                       bank.layers()[0].kv_k, bank.layers()[0].kv_v};
  auto f = [&](const std::vector<ag::Variable>&) {
    auto z = gates.sample(11, 3);  // the same u each call: a fixed function of log_alpha
    auto hooks = bank.hooks(domain_ids, &z.heads, &z.neurons);
    nn::ForwardOptions fo;
    fo.hooks = &hooks;
    ag::Variable loss = model.loss(x, y, fo);
    // plus the sparsity term, so that the expected-sparsity gradient is checked through too
    return ag::add(loss, ag::scale(gates.expected_sparsity(), 0.3));
  };
  ag::GradcheckResult r = ag::gradcheck(f, checked, 1e-6, 1e-9, 1e-5);
  EXPECT_TRUE(r.ok) << r.first_failure << " (max rel " << r.max_rel_error << ")";
  EXPECT_GT(r.checked, 100);
}

INSTANTIATE_TEST_SUITE_P(Families, WholeModelGradients, ::testing::Values("llama", "qwen3"));

// kv_init "neutral": a gate table [D, G] per layer at 0, so the model with the memory attached computes
// what it computes without it (to rounding), while the gates get a nonzero gradient; with the gates
// open (random positive) their gradient through the whole model matches finite differences, and the
// projection clamps negative gates to 0. The gates are in kv_parameters(), state() and the exports.
TEST(Memory, NeutralKvInitStartsAtTheBaseModelAndItsGatesLearn) {
  nn::Transformer model(tiny("qwen3"), DType::f64);
  model.init_random(6);
  MemoryConfig mc;
  mc.lora = false;
  mc.slots = 3;
  mc.kv_init = "neutral";
  MemoryBank bank(model, mc, {"a", "b"}, 7);
  for (auto v : bank.kv_parameters())  // keys/values far from 0, so an open gate would change the output
    if (v.name().find("gate") == std::string::npos)
      v.mutable_data().copy_(rand_uniform(v.shape(), Philox(8, 1), -2, 2, DType::f64));
  ASSERT_EQ(bank.kv_parameters().size(), 6u);  // keys, values, gate per layer
  const auto& gate0 = bank.layers()[0].kv_gate;
  ASSERT_TRUE(gate0.defined());
  EXPECT_EQ(shape_str(gate0.shape()), "[2, 2]");
  Tensor domain_ids = Tensor::from_vector<int64_t>({1, 0}, {2});
  Tensor x = ids(2, 5, 0), y = ids(2, 5, 1);
  auto loss_with = [&](bool memory) {
    auto hooks = bank.hooks(domain_ids);
    nn::ForwardOptions fo;
    if (memory) fo.hooks = &hooks;
    return model.loss(x, y, fo);
  };
  ag::Variable with = loss_with(true);
  const double without = loss_with(false).data().item();
  EXPECT_NEAR(with.data().item(), without, 1e-13 * std::abs(without));
  with.backward();
  for (const auto& t : bank.layers()) {
    ASSERT_TRUE(t.kv_gate.grad().defined());
    EXPECT_GT(max_abs_diff(t.kv_gate.grad(), Tensor::zeros({2, 2}, DType::f64)), 1e-8);
    EXPECT_EQ(max_abs_diff(t.kv_k.grad(), Tensor::zeros(t.kv_k.shape(), DType::f64)), 0.0);  // closed: no signal
  }

  for (auto& t : bank.layers())
    t.kv_gate.mutable_data().copy_(rand_uniform({2, 2}, Philox(8, 2), 0.2, 1.0, DType::f64));
  EXPECT_GT(std::abs(loss_with(true).data().item() - without), 1e-6);  // open gates: the memory matters
  std::vector<ag::Variable> checked = {bank.layers()[0].kv_gate, bank.layers()[1].kv_gate, bank.layers()[1].kv_v};
  auto f = [&](const std::vector<ag::Variable>&) { return loss_with(true); };
  ag::GradcheckResult r = ag::gradcheck(f, checked, 1e-6, 1e-9, 1e-5);
  EXPECT_TRUE(r.ok) << r.first_failure << " (max rel " << r.max_rel_error << ")";

  bank.layers()[0].kv_gate.mutable_data().copy_(Tensor::from_vector<double>({-0.5, 0.25, 0.0, -1e-9}, {2, 2}));
  bank.project_gates();
  EXPECT_EQ(bank.layers()[0].kv_gate.data().to_vector<double>(), (std::vector<double>{0.0, 0.25, 0.0, 0.0}));
  bool in_state = false;
  for (const auto& [name, t] : bank.state()) in_state = in_state || name == "kv.0.gate";
  EXPECT_TRUE(in_state);
}

}  // namespace
}  // namespace koff::offload
