// config.json for Llama 3.x, Qwen 2.5 and Qwen 3; expected tensor names and shapes; check_tensors.
// The configs below are those published with meta-llama/Llama-3.2-1B, Qwen/Qwen2.5-0.5B and
// Qwen/Qwen3-0.6B on the Hugging Face hub, verbatim.
#include <gtest/gtest.h>

#include "engine/io/model_config.h"
#include "engine/io/safetensors.h"
#include "tests/io/test_support.h"

namespace koff::io::testing {
namespace {

const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
  "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})";

const char* kQwen25 = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2",
  "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1", "use_cache": true, "use_mrope": false, "use_sliding_window": false,
  "vocab_size": 151936})";

const char* kQwen3 = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
  "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28,
  "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936})";

ModelConfig parse(const std::string& text) { return parse_config(nlohmann::json::parse(text), "cfg.json"); }

nlohmann::json with(const char* base, const nlohmann::json& patch) {
  nlohmann::json j = nlohmann::json::parse(base);
  j.merge_patch(patch);
  return j;
}

const TensorSpec* find(const std::vector<TensorSpec>& specs, const std::string& name) {
  for (const TensorSpec& s : specs)
    if (s.name == name) return &s;
  return nullptr;
}

TEST(ModelConfig, Llama32) {
  const ModelConfig c = parse(kLlama32);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.num_hidden_layers, 16);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.has_rope_scaling());
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.has_qkv_bias());
  EXPECT_FALSE(c.has_o_bias());
  EXPECT_FALSE(c.has_qk_norm());
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{128001});
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_FALSE(c.is_pruned());

  const auto specs = expected_tensors(c);
  EXPECT_EQ(specs.size(), 1 + 16 * 9 + 1u);  // tied: no lm_head
  EXPECT_EQ(find(specs, "model.embed_tokens.weight")->shape, (Shape{128256, 2048}));
  EXPECT_EQ(find(specs, "model.layers.3.self_attn.q_proj.weight")->shape, (Shape{2048, 2048}));
  EXPECT_EQ(find(specs, "model.layers.3.self_attn.k_proj.weight")->shape, (Shape{512, 2048}));
  EXPECT_EQ(find(specs, "model.layers.15.mlp.down_proj.weight")->shape, (Shape{2048, 8192}));
  EXPECT_EQ(find(specs, "lm_head.weight"), nullptr);

  // Llama 3 (no scaling), head_dim from d / H, untied, attention and MLP biases.
  const ModelConfig u = parse_config(with(kLlama32, {{"rope_scaling", nullptr},
                                                     {"head_dim", nullptr},
                                                     {"tie_word_embeddings", false},
                                                     {"attention_bias", true},
                                                     {"mlp_bias", true},
                                                     {"eos_token_id", {128001, 128008, 128009}}}),
                                     "cfg.json");
  EXPECT_FALSE(u.has_rope_scaling());
  EXPECT_EQ(u.head_dim, 64);
  EXPECT_EQ(u.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  const auto us = expected_tensors(u);
  EXPECT_EQ(find(us, "lm_head.weight")->shape, (Shape{128256, 2048}));
  EXPECT_EQ(find(us, "model.layers.0.self_attn.o_proj.bias")->shape, (Shape{2048}));
  EXPECT_EQ(find(us, "model.layers.0.self_attn.v_proj.bias")->shape, (Shape{512}));
  EXPECT_EQ(find(us, "model.layers.0.mlp.up_proj.bias")->shape, (Shape{8192}));
  EXPECT_EQ(find(us, "model.layers.0.mlp.down_proj.bias")->shape, (Shape{2048}));
}

TEST(ModelConfig, Qwen25HasQkvBiasesButNoOBias) {
  const ModelConfig c = parse(kQwen25);
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.head_dim, 64);  // 896 / 14
  EXPECT_TRUE(c.has_qkv_bias());
  EXPECT_FALSE(c.has_o_bias());
  EXPECT_FALSE(c.has_rope_scaling());
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  const auto specs = expected_tensors(c);
  EXPECT_EQ(specs.size(), 1 + 24 * 12 + 1u);
  EXPECT_EQ(find(specs, "model.layers.0.self_attn.q_proj.bias")->shape, (Shape{896}));
  EXPECT_EQ(find(specs, "model.layers.0.self_attn.k_proj.bias")->shape, (Shape{128}));
  EXPECT_EQ(find(specs, "model.layers.0.self_attn.o_proj.bias"), nullptr);
  EXPECT_EQ(find(specs, "model.layers.0.self_attn.q_norm.weight"), nullptr);
}

TEST(ModelConfig, Qwen3HasQkNormAndAnExplicitHeadDim) {
  const ModelConfig c = parse(kQwen3);
  EXPECT_EQ(c.head_dim, 128);  // not 1024 / 16
  EXPECT_TRUE(c.has_qk_norm());
  EXPECT_FALSE(c.has_qkv_bias());
  EXPECT_EQ(c.max_position_embeddings, 40960);
  const auto specs = expected_tensors(c);
  EXPECT_EQ(specs.size(), 1 + 28 * 11 + 1u);
  EXPECT_EQ(find(specs, "model.layers.2.self_attn.q_proj.weight")->shape, (Shape{2048, 1024}));
  EXPECT_EQ(find(specs, "model.layers.2.self_attn.k_proj.weight")->shape, (Shape{1024, 1024}));
  EXPECT_EQ(find(specs, "model.layers.2.self_attn.o_proj.weight")->shape, (Shape{1024, 2048}));
  EXPECT_EQ(find(specs, "model.layers.2.self_attn.q_norm.weight")->shape, (Shape{128}));
  EXPECT_EQ(find(specs, "model.layers.2.self_attn.k_norm.weight")->shape, (Shape{128}));
  // transformers' Qwen3Config default when head_dim is absent.
  EXPECT_EQ(parse_config(with(kQwen3, {{"head_dim", nullptr}}), "cfg.json").head_dim, 128);
}

TEST(ModelConfig, RopeParametersOfTransformers5) {
  const ModelConfig c = parse_config(with(kLlama32, {{"rope_scaling", nullptr},
                                                     {"rope_theta", nullptr},
                                                     {"rope_parameters",
                                                      {{"rope_type", "llama3"},
                                                       {"rope_theta", 500000.0},
                                                       {"factor", 8.0},
                                                       {"low_freq_factor", 1.0},
                                                       {"high_freq_factor", 4.0},
                                                       {"original_max_position_embeddings", 8192}}}}),
                                     "cfg.json");
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  const ModelConfig d = parse_config(
      with(kQwen3, {{"rope_theta", nullptr}, {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 5e6}}}}),
      "cfg.json");
  EXPECT_DOUBLE_EQ(d.rope_theta, 5e6);
  EXPECT_FALSE(d.has_rope_scaling());
}

TEST(ModelConfig, RoundTripThroughJson) {
  for (const char* text : {kLlama32, kQwen25, kQwen3}) {
    const ModelConfig c = parse(text);
    const nlohmann::json j = to_json(c);
    EXPECT_EQ(j["architectures"], nlohmann::json::parse(text)["architectures"]);
    const ModelConfig back = parse_config(j, "round-trip");
    EXPECT_EQ(to_json(back), j) << j.dump(2);
    EXPECT_EQ(back.head_dim, c.head_dim);
    EXPECT_EQ(back.has_qkv_bias(), c.has_qkv_bias());
    EXPECT_EQ(back.rope_scaling.factor, c.rope_scaling.factor);
  }
  // Every key a Hugging Face config class needs to rebuild the same model is there.
  const nlohmann::json q = to_json(parse(kQwen3));
  for (const char* key : {"model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
                          "max_position_embeddings", "tie_word_embeddings", "attention_bias", "hidden_act"})
    EXPECT_TRUE(q.contains(key)) << key;
  EXPECT_EQ(q["head_dim"], 128);
}

class ModelConfigFiles : public ScratchDir {};

TEST_F(ModelConfigFiles, PrunedBackboneWidthsAndTheKoffObject) {
  nlohmann::json j =
      with(kQwen25, {{"num_hidden_layers", 2},
                     {"koff",
                      {{"target_sparsity", 0.12},
                       {"source", "Qwen/Qwen2.5-0.5B"},
                       {"layers",
                        {{{"heads_per_kv_group", {7, 3}}, {"intermediate_size", 4000}},
                         {{"num_attention_heads", 7}, {"num_key_value_heads", 1}, {"intermediate_size", 0}}}}}}});
  write_bytes(path("config.json"), j.dump());
  const ModelConfig c = load_config(path("config.json"));
  ASSERT_TRUE(c.is_pruned());
  EXPECT_EQ(c.layer(0).heads_per_kv_group, (std::vector<int64_t>{7, 3}));
  EXPECT_EQ(c.layer(0).num_attention_heads(), 10);
  EXPECT_EQ(c.layer(1).heads_per_kv_group, (std::vector<int64_t>{7}));
  EXPECT_EQ(c.layer(1).intermediate_size, 0);
  EXPECT_EQ(c.koff["target_sparsity"], 0.12);
  const auto specs = expected_tensors(c);
  EXPECT_EQ(find(specs, "model.layers.0.self_attn.q_proj.weight")->shape, (Shape{640, 896}));
  EXPECT_EQ(find(specs, "model.layers.0.self_attn.k_proj.bias")->shape, (Shape{128}));
  EXPECT_EQ(find(specs, "model.layers.0.self_attn.o_proj.weight")->shape, (Shape{896, 640}));
  EXPECT_EQ(find(specs, "model.layers.0.mlp.gate_proj.weight")->shape, (Shape{4000, 896}));
  EXPECT_EQ(find(specs, "model.layers.1.self_attn.v_proj.weight")->shape, (Shape{64, 896}));
  EXPECT_EQ(find(specs, "model.layers.1.mlp.down_proj.weight")->shape, (Shape{896, 0}));

  save_config(path("saved.json"), c);
  const ModelConfig back = load_config(path("saved.json"));
  EXPECT_EQ(back.layer_widths, c.layer_widths);
  EXPECT_EQ(back.koff["source"], "Qwen/Qwen2.5-0.5B");
  EXPECT_EQ(back.koff["layers"][1]["num_attention_heads"], 7);
}

TEST_F(ModelConfigFiles, ErrorsNameTheFileAndTheKey) {
  auto rejects = [&](const nlohmann::json& j, const std::vector<std::string>& parts) {
    write_bytes(path("config.json"), j.dump());
    std::vector<std::string> all = parts;
    all.push_back(path("config.json").string());
    expect_error([&] { load_config(path("config.json")); }, all);
  };
  rejects(with(kLlama32, {{"model_type", "mistral"}}), {"'model_type'", "unsupported model_type 'mistral'"});
  rejects(with(kLlama32, {{"model_type", nullptr}}), {"'model_type'", "missing"});
  rejects(with(kLlama32, {{"hidden_size", nullptr}}), {"'hidden_size'", "missing"});
  rejects(with(kQwen25, {{"vocab_size", nullptr}}), {"'vocab_size'", "missing"});
  rejects(with(kLlama32, {{"num_hidden_layers", 0}}), {"'num_hidden_layers'", "positive"});
  rejects(with(kLlama32, {{"intermediate_size", -5}}), {"'intermediate_size'", "positive"});
  rejects(with(kLlama32, {{"hidden_size", "2048"}}), {"'hidden_size'", "integer"});
  rejects(with(kLlama32, {{"num_key_value_heads", 5}}), {"'num_key_value_heads'", "does not divide"});
  rejects(with(kQwen25, {{"hidden_size", 900}}), {"'hidden_size'", "not divisible"});
  rejects(with(kLlama32, {{"head_dim", 63}}), {"'head_dim'", "odd"});
  rejects(with(kLlama32, {{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}}),
          {"'rope_scaling'", "unsupported RoPE scaling type 'yarn'"});
  rejects(with(kLlama32, {{"rope_scaling", {{"low_freq_factor", nullptr}}}}),
          {"'rope_scaling.low_freq_factor'", "missing"});
  rejects(with(kLlama32, {{"rope_scaling", {{"low_freq_factor", 4.0}}}}), {"'rope_scaling'", "low_freq_factor"});
  rejects(with(kLlama32, {{"hidden_act", "gelu"}}), {"'hidden_act'", "gelu"});
  rejects(with(kQwen25, {{"use_sliding_window", true}}), {"'use_sliding_window'"});
  rejects(with(kLlama32, {{"tie_word_embeddings", "yes"}}), {"'tie_word_embeddings'", "true or false"});
  rejects(with(kLlama32, {{"eos_token_id", {1, "x"}}}), {"'eos_token_id[1]'", "integer"});
  rejects(with(kQwen25, {{"koff", {{"layers", {{{"intermediate_size", 1}}}}}}}), {"'koff.layers'", "1 entries"});
  nlohmann::json two = with(kQwen25, {{"num_hidden_layers", 2}});
  rejects(with(two.dump().c_str(), {{"koff",
                                     {{"layers",
                                       {{{"heads_per_kv_group", {8}}, {"intermediate_size", 1}},
                                        {{"heads_per_kv_group", {1}}, {"intermediate_size", 1}}}}}}}),
          {"'koff.layers[0].heads_per_kv_group[0]'", "outside [1, 7]"});
  rejects(with(two.dump().c_str(), {{"koff",
                                     {{"layers",
                                       {{{"heads_per_kv_group", {1}}, {"intermediate_size", 5000}},
                                        {{"heads_per_kv_group", {1}}, {"intermediate_size", 1}}}}}}}),
          {"'koff.layers[0].intermediate_size'", "outside [0, 4864]"});
  rejects(with(two.dump().c_str(), {{"koff",
                                     {{"layers",
                                       {{{"heads_per_kv_group", {1, 1, 1}}, {"intermediate_size", 5}},
                                        {{"heads_per_kv_group", {1}}, {"intermediate_size", 1}}}}}}}),
          {"'koff.layers[0]'", "keeps 3 KV heads of 2"});
  rejects(
      with(two.dump().c_str(), {{"koff",
                                 {{"layers",
                                   {{{"num_attention_heads", 5}, {"num_key_value_heads", 2}, {"intermediate_size", 5}},
                                    {{"heads_per_kv_group", {1}}, {"intermediate_size", 1}}}}}}}),
      {"'koff.layers[0]'", "heads_per_kv_group"});

  write_bytes(path("config.json"), "{\"model_type\": ");
  expect_error([&] { load_config(path("config.json")); }, {path("config.json").string(), "not valid JSON"});
  expect_error([&] { load_config(path("none.json")); }, {"none.json", "cannot open"});
}

// ---- check_tensors ------------------------------------------------------------------------------

ModelConfig tiny(const std::string& type, bool tied) {
  nlohmann::json j = {{"model_type", type},       {"vocab_size", 11},       {"hidden_size", 8},
                      {"intermediate_size", 12},  {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                      {"num_key_value_heads", 2}, {"head_dim", 4},          {"tie_word_embeddings", tied}};
  return parse_config(j, "tiny");
}

NamedTensors weights_for(const ModelConfig& c) {
  NamedTensors out;
  for (const TensorSpec& s : expected_tensors(c)) out.emplace_back(s.name, Tensor::zeros(s.shape, DType::bf16));
  return out;
}

TEST_F(ModelConfigFiles, CheckTensorsAcceptsACompleteCheckpoint) {
  for (const char* type : {"llama", "qwen2", "qwen3"}) {
    for (bool tied : {false, true}) {
      const ModelConfig c = tiny(type, tied);
      NamedTensors w = weights_for(c);
      save_sharded(dir_, w, 1000);
      EXPECT_NO_THROW(check_tensors(Checkpoint(dir_), c)) << type << (tied ? " tied" : "");
      if (tied) {  // some exports of tied models still carry lm_head.weight
        w.emplace_back("lm_head.weight", Tensor::zeros({11, 8}, DType::bf16));
        save_sharded(dir_, w, 1000);
        EXPECT_NO_THROW(check_tensors(Checkpoint(dir_), c)) << type;
        w.back().second = Tensor::zeros({11, 7}, DType::bf16);
        save_sharded(dir_, w, 1000);
        expect_error([&] { check_tensors(Checkpoint(dir_), c); }, {"lm_head.weight is [11, 7]"});
      }
    }
  }
}

TEST_F(ModelConfigFiles, CheckTensorsListsEveryProblemInOneError) {
  const ModelConfig c = tiny("qwen3", false);
  NamedTensors w;
  for (auto& [name, t] : weights_for(c)) {
    if (name == "model.layers.1.self_attn.k_norm.weight" || name == "lm_head.weight") continue;  // missing
    if (name == "model.layers.0.mlp.up_proj.weight") t = Tensor::zeros({12, 9}, DType::bf16);    // mis-shaped
    if (name == "model.norm.weight") t = Tensor::zeros({8}, DType::i32);                         // integer
    w.emplace_back(name, t);
  }
  w.emplace_back("model.layers.0.self_attn.q_proj.bias", Tensor::zeros({16}, DType::bf16));  // unexpected
  w.emplace_back("model.layers.7.mlp.up_proj.weight", Tensor::zeros({1}, DType::bf16));      // unexpected
  save_safetensors(path("model.safetensors"), w);
  expect_error([&] { check_tensors(Checkpoint(dir_), c); },
               {dir_.string(), "qwen3, 2 layers",
                "missing (2): lm_head.weight [11, 8], model.layers.1.self_attn.k_norm.weight [4]",
                "unexpected (2): model.layers.0.self_attn.q_proj.bias, model.layers.7.mlp.up_proj.weight",
                "mis-shaped (1): model.layers.0.mlp.up_proj.weight is [12, 9] but the config needs [12, 8]",
                "not floating point (1): model.norm.weight is I32"});
}

}  // namespace
}  // namespace koff::io::testing
