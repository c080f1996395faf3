// config.json and tensor names/shapes against Hugging Face transformers itself
// (tests/io/transformers_reference.py): transformers must load every config koff writes and build
// a model with exactly the tensors expected_tensors() lists; and koff must read the config.json and
// the (sharded) safetensors that transformers' save_pretrained writes.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "engine/io/model_config.h"
#include "engine/io/safetensors.h"
#include "tests/io/test_support.h"

namespace koff::io::testing {
namespace {

// Small models of every family and variant; the suffix _sharded asks for a sharded save.
std::vector<std::pair<std::string, nlohmann::json>> variants() {
  const nlohmann::json base = {{"vocab_size", 64},
                               {"hidden_size", 32},
                               {"intermediate_size", 48},
                               {"num_hidden_layers", 2},
                               {"num_attention_heads", 4},
                               {"num_key_value_heads", 2},
                               {"max_position_embeddings", 256},
                               {"rms_norm_eps", 1e-5},
                               {"bos_token_id", 1},
                               {"eos_token_id", 2}};
  auto make = [&](const nlohmann::json& patch) {
    nlohmann::json j = base;
    j.merge_patch(patch);
    return j;
  };
  return {
      {"llama_llama3_tied", make({{"model_type", "llama"},
                                  {"tie_word_embeddings", true},
                                  {"rope_theta", 500000.0},
                                  {"rope_scaling",
                                   {{"rope_type", "llama3"},
                                    {"factor", 8.0},
                                    {"low_freq_factor", 1.0},
                                    {"high_freq_factor", 4.0},
                                    {"original_max_position_embeddings", 64}}}})},
      {"llama_biases_sharded",
       make({{"model_type", "llama"}, {"attention_bias", true}, {"mlp_bias", true}, {"eos_token_id", {2, 3}}})},
      {"qwen2_tied", make({{"model_type", "qwen2"}, {"tie_word_embeddings", true}, {"rope_theta", 1e6}})},
      {"qwen2_untied_sharded", make({{"model_type", "qwen2"}})},
      {"qwen3_head_dim_sharded", make({{"model_type", "qwen3"}, {"head_dim", 16}, {"rope_theta", 1e6}})},
      {"qwen3_tied_bias",
       make({{"model_type", "qwen3"}, {"head_dim", 8}, {"attention_bias", true}, {"tie_word_embeddings", true}})},
  };
}

using TransformersReference = ScratchDir;

TEST_F(TransformersReference, AgreesOnConfigsAndTensors) {
  std::map<std::string, ModelConfig> configs;
  for (const auto& [name, j] : variants()) {
    configs[name] = parse_config(j, name);
    fs::create_directories(path("configs/" + name));
    save_config(path("configs/" + name + "/config.json"), configs[name]);
  }
  ASSERT_EQ(
      run_command(fmt::format("'{}' '{}/transformers_reference.py' '{}'", python(), test_source_dir(), dir_.string())),
      0)
      << "the transformers reference script failed (is transformers installed in " << python() << "?)";

  for (const auto& [name, c] : configs) {
    SCOPED_TRACE(name);
    const auto ref = nlohmann::json::parse(read_bytes(path("configs/" + name + "/reference.json")));
    // The tensors transformers builds from koff's config.json are exactly those koff expects.
    std::map<std::string, Shape> want, got;
    for (const TensorSpec& s : expected_tensors(c)) want[s.name] = s.shape;
    for (const auto& [tname, shape] : ref["tensors"].items()) got[tname] = shape.get<Shape>();
    EXPECT_EQ(got, want);
    EXPECT_EQ(ref["head_dim"], c.head_dim);
    EXPECT_EQ(ref["architecture"], to_json(c)["architectures"][0]);
    EXPECT_DOUBLE_EQ(ref["rope"]["rope_theta"].get<double>(), c.rope_theta);
    EXPECT_EQ(ref["rope"]["rope_type"], c.has_rope_scaling() ? "llama3" : "default");
    if (c.has_rope_scaling()) {
      EXPECT_DOUBLE_EQ(ref["rope"]["factor"].get<double>(), c.rope_scaling.factor);
      EXPECT_DOUBLE_EQ(ref["rope"]["low_freq_factor"].get<double>(), c.rope_scaling.low_freq_factor);
      EXPECT_DOUBLE_EQ(ref["rope"]["high_freq_factor"].get<double>(), c.rope_scaling.high_freq_factor);
      EXPECT_EQ(ref["rope"]["original_max_position_embeddings"].get<double>(),
                c.rope_scaling.original_max_position_embeddings);
    }

    // What save_pretrained wrote: its config.json reads back to the same model, and its weights
    // pass check_tensors.
    const fs::path saved = path("saved/" + name);
    const ModelConfig back = load_config(saved / "config.json");
    EXPECT_EQ(back.torch_dtype, "float32");  // transformers 5 writes "dtype"; 4.x wrote "torch_dtype"
    nlohmann::json back_json = to_json(back);
    back_json.erase("torch_dtype");
    EXPECT_EQ(back_json, to_json(c)) << read_bytes(saved / "config.json");
    const Checkpoint ck(saved);
    EXPECT_EQ(ck.is_sharded(), name.ends_with("_sharded"));
    EXPECT_NO_THROW(check_tensors(ck, back));
    const Tensor embed = ck.load("model.embed_tokens.weight", DType::f32);
    EXPECT_EQ(embed.shape(), (Shape{64, 32}));
    EXPECT_GT(embed.to_vector<float>()[5] * embed.to_vector<float>()[5], 0.0f) << "initialised weights, not zeros";
  }
}

}  // namespace
}  // namespace koff::io::testing
