// koff's transformer against Hugging Face transformers on checkpoints transformers itself wrote
// (tests/model/hf_reference.py): Llama 3 with llama3 rope scaling, a tied + sharded Llama, Qwen 2.5
// (q/k/v biases) and Qwen 3 (q/k norms, explicit head_dim).
//   logits            relative error < 1e-5 (f32)
//   loss, every weight gradient   relative error < 1e-4
//   KV-cache decoding gives the logits of a full forward
#include <gtest/gtest.h>

#include "engine/io/safetensors.h"
#include "engine/nn/transformer.h"

namespace koff {
namespace {

namespace ag = autograd;

std::string model_dir(const std::string& name) { return std::string(KOFF_HF_MODELS) + "/" + name; }

// Next-token targets of ids [B, T]: ids shifted left, the last position ignored.
Tensor next_token_targets(const Tensor& ids) {
  Tensor t = Tensor::full(ids.shape(), static_cast<double>(ops::kIgnoreIndex), DType::i64);
  for (int64_t b = 0; b < ids.size(0); ++b)
    for (int64_t i = 0; i + 1 < ids.size(1); ++i) t.set({b, i}, ids.at({b, i + 1}));
  return t;
}

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, LogitsLossAndGradientsMatchTransformers) {
  const std::string dir = model_dir(GetParam());
  io::SafetensorsFile ref(dir + "/reference.safetensors");
  nn::Transformer model = nn::Transformer::load(dir, DType::f32);
  model.set_requires_grad(true);
  Tensor ids = ref.load("input_ids", DType::i64);

  Tensor logits = model.logits(ids).data();
  EXPECT_LT(max_rel_error(logits, ref.load("logits", DType::f32)), 1e-5);

  ag::Variable loss = model.loss(ids, next_token_targets(ids));
  const double want = ref.load("loss", DType::f64).item();
  EXPECT_NEAR(loss.data().item() / want, 1.0, 1e-4) << "ours " << loss.data().item() << " transformers " << want;
  loss.backward();
  int checked = 0;
  for (const auto& [name, v] : model.named_parameters()) {
    ASSERT_TRUE(v.grad().defined()) << name;
    Tensor g = ref.load("grad." + name, DType::f32);
    EXPECT_LT(max_rel_error(v.grad(), g), 1e-4) << "gradient of " << name;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(model.named_parameters().size()));
  EXPECT_GE(checked, 9 * 2 + 2);
}

TEST_P(HfParity, KvCacheDecodingMatchesFullForward) {
  nn::Transformer model = nn::Transformer::load(model_dir(GetParam()), DType::f32);
  io::SafetensorsFile ref(model_dir(GetParam()) + "/reference.safetensors");
  Tensor ids = ref.load("input_ids", DType::i64).select(0, 0).unsqueeze(0).contiguous();  // [1, T]
  const int64_t T = ids.size(1);
  ag::NoGradGuard no_grad;
  Tensor full = model.logits(ids).data();
  nn::KvCache cache = model.make_cache(1, T);
  nn::Transformer::ForwardOptions fo;
  fo.cache = &cache;
  // A prompt of 4 tokens in one pass, then one token at a time.
  Tensor first = model.logits(ids.slice(1, 0, 4).contiguous(), fo).data();
  EXPECT_LT(max_rel_error(first, full.slice(1, 0, 4).contiguous()), 1e-5);
  for (int64_t t = 4; t < T; ++t) {
    Tensor step = model.logits(ids.slice(1, t, t + 1).contiguous(), fo).data();
    EXPECT_LT(max_rel_error(step, full.slice(1, t, t + 1).contiguous()), 1e-5) << "position " << t;
  }
  EXPECT_EQ(cache.length, T);
}

INSTANTIATE_TEST_SUITE_P(Families, HfParity, ::testing::Values("llama3", "llama3_tied_sharded", "qwen2", "qwen3"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace koff
