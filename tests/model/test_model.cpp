// Transformer behaviour that needs no external reference: frozen weights, save/load, gates and
// memory hooks, sampling.
#include <gtest/gtest.h>

#include <filesystem>

#include "engine/nn/generate.h"
#include "engine/nn/transformer.h"
#include "engine/ops/dispatch.h"
#include "engine/tensor/random.h"

namespace koff {
namespace {

namespace ag = autograd;
namespace fs = std::filesystem;

io::ModelConfig tiny_config() {
  return io::parse_config({{"model_type", "llama"}, {"vocab_size", 50}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
                               {"max_position_embeddings", 64}, {"tie_word_embeddings", true}},
                              "tiny test config");
}

nn::Transformer tiny_model() {
  nn::Transformer m(tiny_config(), DType::f32);
  m.init_random(3);
  return m;
}

Tensor some_ids(int64_t B, int64_t T) {
  std::vector<int64_t> v(static_cast<size_t>(B * T));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int64_t>((i * 7 + 3) % 50);
  return Tensor::from_vector(v, {B, T});
}

TEST(Transformer, FrozenBaseGetsNoWeightGradients) {
  nn::Transformer m = tiny_model();  // weights are frozen by default
  // A trainable gate on layer 0's heads: the only thing that should receive a gradient.
  std::vector<nn::LayerHooks> hooks(2);
  hooks[0].head_gate = ag::Variable(Tensor::full({4}, 0.9), true, "gate");
  nn::Transformer::ForwardOptions fo;
  fo.hooks = &hooks;
  Tensor ids = some_ids(2, 6);
  ag::Variable loss = m.loss(ids, some_ids(2, 6), fo);
  op_counters() = {};
  loss.backward();
  EXPECT_TRUE(hooks[0].head_gate.grad().defined());
  for (const auto& [name, v] : m.named_parameters()) EXPECT_FALSE(v.grad().defined()) << name;
  // Each of the 7 projections in 2 layers costs one activation-gradient GEMM at most, plus the
  // lm_head chunk GEMMs (recompute + dh); never a weight-gradient GEMM.
  const int64_t frozen_max = 2 * 7 + 2;
  EXPECT_LE(op_counters().gemm, frozen_max);
}

TEST(Transformer, ClosedHeadGatesRemoveAttention) {
  nn::Transformer m = tiny_model();
  std::vector<nn::LayerHooks> closed(2);
  for (auto& h : closed) h.head_gate = ag::Variable(Tensor::zeros({4}));
  nn::Transformer::ForwardOptions fo;
  fo.hooks = &closed;
  Tensor gated = m.logits(some_ids(1, 5), fo).data();
  // The same as a model whose o_proj weights are zero.
  for (int64_t l = 0; l < 2; ++l) m.layer(l).wo.mutable_data().zero_();
  EXPECT_LT(max_abs_diff(gated, m.logits(some_ids(1, 5)).data()), 1e-6);
}

TEST(Transformer, SaveAndLoadRoundTrip) {
  nn::Transformer m = tiny_model();
  const fs::path dir = fs::temp_directory_path() / "koff_test_model_roundtrip";
  fs::remove_all(dir);
  fs::create_directories(dir);
  m.save(dir.string(), DType::f32);
  nn::Transformer back = nn::Transformer::load(dir.string(), DType::f32);
  EXPECT_EQ(max_abs_diff(back.logits(some_ids(1, 7)).data(), m.logits(some_ids(1, 7)).data()), 0.0);
  EXPECT_EQ(back.num_parameters(), m.num_parameters());
  fs::remove_all(dir);
}

TEST(Transformer, BadIdsAreAClearError) {
  nn::Transformer m = tiny_model();
  EXPECT_THROW(m.logits(Tensor::zeros({5}, DType::i64)), Error);
  try {
    m.logits(Tensor::full({1, 3}, 50, DType::i64));  // id == vocab
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("50"), std::string::npos) << e.what();
  }
}

TEST(Generate, GreedyAndNucleusSampling) {
  std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.9f};
  EXPECT_EQ(nn::sample_token(logits.data(), 4, 0.0, 1.0, 0.5), 1);
  // top_p tiny: only the most probable token survives, whatever the uniform draw.
  EXPECT_EQ(nn::sample_token(logits.data(), 4, 1.0, 1e-6, 0.999), 1);
  // Frequencies over many draws follow softmax(logits / T) restricted to the nucleus.
  std::vector<int> count(4, 0);
  const int n = 20000;
  Philox rng(5, 0);
  for (int i = 0; i < n; ++i) count[nn::sample_token(logits.data(), 4, 1.0, 1.0, rng.uniform(i))]++;
  double z = std::exp(0.0) + std::exp(3.0) + std::exp(1.0) + std::exp(2.9);
  EXPECT_NEAR(count[1] / double(n), std::exp(3.0) / z, 0.015);
  EXPECT_NEAR(count[3] / double(n), std::exp(2.9) / z, 0.015);
}

TEST(Generate, SameSeedSameTokens) {
  nn::Transformer m = tiny_model();
  nn::GenerateOptions g;
  g.max_new_tokens = 8;
  g.temperature = 1.0;
  g.seed = 9;
  auto a = nn::generate(m, {1, 2, 3}, g), b = nn::generate(m, {1, 2, 3}, g);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 8u);
}

}  // namespace
}  // namespace koff
