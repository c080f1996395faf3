#include "engine/io/model_config.h"

#include <fmt/ranges.h>

#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"

namespace koff::io {

int64_t LayerWidths::num_attention_heads() const {
  return std::accumulate(heads_per_kv_group.begin(), heads_per_kv_group.end(), int64_t(0));
}

LayerWidths ModelConfig::layer(int64_t i) const {
  KOFF_CHECK(i >= 0 && i < num_hidden_layers, "layer {} out of range for a model of {} layers", i, num_hidden_layers);
  if (!layer_widths.empty()) return layer_widths[static_cast<size_t>(i)];
  LayerWidths w;
  w.heads_per_kv_group.assign(static_cast<size_t>(num_key_value_heads), num_attention_heads / num_key_value_heads);
  w.intermediate_size = intermediate_size;
  return w;
}

namespace {

const char* architecture_of(const std::string& model_type) {
  if (model_type == "llama") return "LlamaForCausalLM";
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  return "Qwen3ForCausalLM";
}

// Typed access to config keys; every error names the source and the key.
class Reader {
 public:
  Reader(const nlohmann::json& j, const std::string& source) : j_(j), source_(source) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  [[noreturn]] void bad(const std::string& key, const std::string& problem) const {
    fail("{}: key '{}': {}", source_, key, problem);
  }

  const nlohmann::json& required(const char* key) const {
    if (!has(key)) bad(key, "missing (required)");
    return j_[key];
  }

  int64_t integer(const char* key, std::optional<int64_t> fallback = std::nullopt) const {
    if (!has(key)) {
      if (!fallback) bad(key, "missing (required)");
      return *fallback;
    }
    return as_integer(j_[key], key);
  }

  int64_t as_integer(const nlohmann::json& v, const std::string& key) const {
    if (!v.is_number_integer()) bad(key, fmt::format("must be an integer, got {}", v.dump()));
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      bad(key, fmt::format("{} is too large", v.dump()));
    return v.get<int64_t>();
  }

  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    return as_number(j_[key], key);
  }

  double as_number(const nlohmann::json& v, const std::string& key) const {
    if (!v.is_number()) bad(key, fmt::format("must be a number, got {}", v.dump()));
    return v.get<double>();
  }

  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_boolean()) bad(key, fmt::format("must be true or false, got {}", j_[key].dump()));
    return j_[key].get<bool>();
  }

  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j_[key].is_string()) bad(key, fmt::format("must be a string, got {}", j_[key].dump()));
    return j_[key].get<std::string>();
  }

  int64_t positive(const char* key, std::optional<int64_t> fallback = std::nullopt) const {
    const int64_t v = integer(key, fallback);
    if (v <= 0) bad(key, fmt::format("must be positive, got {}", v));
    return v;
  }

 private:
  const nlohmann::json& j_;
  const std::string& source_;
};

// rope_scaling (transformers <= 4.x) or rope_parameters (transformers 5): both objects with a
// "rope_type" (older files: "type") and the type's parameters.
void read_rope(const Reader& r, const nlohmann::json& j, ModelConfig& c) {
  c.rope_theta = r.number("rope_theta", 10000.0);
  const char* key = nullptr;
  if (r.has("rope_scaling")) key = "rope_scaling";
  if (r.has("rope_parameters")) {
    const nlohmann::json& p = j["rope_parameters"];
    if (!p.is_object()) r.bad("rope_parameters", "must be an object");
    if (p.contains("rope_theta")) c.rope_theta = r.as_number(p["rope_theta"], "rope_parameters.rope_theta");
    if (!key) key = "rope_parameters";
  }
  if (!(c.rope_theta > 0)) r.bad("rope_theta", fmt::format("must be positive, got {}", c.rope_theta));
  if (!key) return;
  const std::string k = key;
  const nlohmann::json& s = j[key];
  if (!s.is_object()) r.bad(k, fmt::format("must be an object or null, got {}", s.dump()));
  std::string type = "default";
  for (const char* tkey : {"rope_type", "type"}) {
    if (s.contains(tkey)) {
      if (!s[tkey].is_string()) r.bad(k + "." + tkey, "must be a string");
      type = s[tkey].get<std::string>();
      break;
    }
  }
  if (type == "default") return;
  if (type != "llama3")
    r.bad(k, fmt::format("unsupported RoPE scaling type '{}' (koff supports llama3, or none)", type));
  auto get = [&](const char* name) -> const nlohmann::json& {
    if (!s.contains(name)) r.bad(k + "." + name, "missing (required by llama3 scaling)");
    return s[name];
  };
  ops::RopeScaling& rs = c.rope_scaling;
  rs.factor = r.as_number(get("factor"), k + ".factor");
  rs.low_freq_factor = r.as_number(get("low_freq_factor"), k + ".low_freq_factor");
  rs.high_freq_factor = r.as_number(get("high_freq_factor"), k + ".high_freq_factor");
  rs.original_max_position_embeddings =
      r.as_integer(get("original_max_position_embeddings"), k + ".original_max_position_embeddings");
  if (!(rs.factor > 0)) r.bad(k + ".factor", fmt::format("must be positive, got {}", rs.factor));
  if (!(rs.low_freq_factor > 0 && rs.high_freq_factor > rs.low_freq_factor))
    r.bad(k, fmt::format("needs 0 < low_freq_factor < high_freq_factor, got {} and {}", rs.low_freq_factor,
                         rs.high_freq_factor));
  if (rs.original_max_position_embeddings <= 0) r.bad(k + ".original_max_position_embeddings", "must be positive");
}

void read_token_ids(const Reader& r, const nlohmann::json& j, ModelConfig& c) {
  if (r.has("bos_token_id")) c.bos_token_id = r.integer("bos_token_id");
  if (r.has("eos_token_id")) {
    const nlohmann::json& e = j["eos_token_id"];
    if (e.is_array()) {
      for (size_t i = 0; i < e.size(); ++i)
        c.eos_token_ids.push_back(r.as_integer(e[i], fmt::format("eos_token_id[{}]", i)));
    } else {
      c.eos_token_ids.push_back(r.integer("eos_token_id"));
    }
  }
}

void read_layer_widths(const Reader& r, ModelConfig& c) {
  if (!c.koff.contains("layers") || c.koff["layers"].is_null()) return;
  const nlohmann::json& layers = c.koff["layers"];
  if (!layers.is_array()) r.bad("koff.layers", "must be an array with one object per layer");
  if (static_cast<int64_t>(layers.size()) != c.num_hidden_layers)
    r.bad("koff.layers", fmt::format("has {} entries for {} layers", layers.size(), c.num_hidden_layers));
  const int64_t group = c.num_attention_heads / c.num_key_value_heads;
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string at = fmt::format("koff.layers[{}]", i);
    const nlohmann::json& l = layers[i];
    if (!l.is_object()) r.bad(at, "must be an object");
    LayerWidths w;
    bool have_groups = false;
    if (l.contains("heads_per_kv_group")) {
      const nlohmann::json& g = l["heads_per_kv_group"];
      if (!g.is_array()) r.bad(at + ".heads_per_kv_group", "must be an array of head counts");
      for (size_t k = 0; k < g.size(); ++k) {
        const std::string gk = fmt::format("{}.heads_per_kv_group[{}]", at, k);
        const int64_t n = r.as_integer(g[k], gk);
        // A KV head is kept exactly when at least one of its query heads is.
        if (n < 1 || n > group) r.bad(gk, fmt::format("{} heads is outside [1, {}]", n, group));
        w.heads_per_kv_group.push_back(n);
      }
      have_groups = true;
    }
    if (l.contains("num_attention_heads") || l.contains("num_key_value_heads")) {
      if (!l.contains("num_attention_heads") || !l.contains("num_key_value_heads"))
        r.bad(at, "num_attention_heads and num_key_value_heads go together");
      const int64_t h = r.as_integer(l["num_attention_heads"], at + ".num_attention_heads");
      const int64_t g = r.as_integer(l["num_key_value_heads"], at + ".num_key_value_heads");
      if (have_groups) {
        if (h != w.num_attention_heads() || g != w.num_key_value_heads())
          r.bad(at, fmt::format("num_attention_heads {} / num_key_value_heads {} disagree with heads_per_kv_group {}",
                                h, g, fmt::join(w.heads_per_kv_group, ", ")));
      } else {
        if (g < 0 || g > c.num_key_value_heads || h < 0 || (g == 0) != (h == 0) || (g > 0 && h % g != 0) ||
            (g > 0 && h / g > group))
          r.bad(at, fmt::format("num_attention_heads {} over num_key_value_heads {} is not an even split of at most "
                                "{} heads per group over at most {} KV heads (give heads_per_kv_group)",
                                h, g, group, c.num_key_value_heads));
        w.heads_per_kv_group.assign(static_cast<size_t>(g), g > 0 ? h / g : 0);
      }
      have_groups = true;
    }
    if (!have_groups) r.bad(at, "needs heads_per_kv_group (or num_attention_heads and num_key_value_heads)");
    if (w.num_key_value_heads() > c.num_key_value_heads)
      r.bad(at, fmt::format("keeps {} KV heads of {}", w.num_key_value_heads(), c.num_key_value_heads));
    if (!l.contains("intermediate_size")) r.bad(at + ".intermediate_size", "missing (required)");
    w.intermediate_size = r.as_integer(l["intermediate_size"], at + ".intermediate_size");
    if (w.intermediate_size < 0 || w.intermediate_size > c.intermediate_size)
      r.bad(at + ".intermediate_size", fmt::format("{} is outside [0, {}]", w.intermediate_size, c.intermediate_size));
    c.layer_widths.push_back(std::move(w));
  }
}

}  // namespace

ModelConfig parse_config(const nlohmann::json& j, const std::string& source) {
  KOFF_CHECK(j.is_object(), "{}: not a JSON object", source);
  Reader r(j, source);
  ModelConfig c;
  c.model_type = r.string("model_type", "");
  if (c.model_type.empty()) r.bad("model_type", "missing (required)");
  if (c.model_type != "llama" && c.model_type != "qwen2" && c.model_type != "qwen3")
    r.bad("model_type", fmt::format("unsupported model_type '{}' (koff supports llama, qwen2, qwen3)", c.model_type));
  const bool llama = c.model_type == "llama", qwen2 = c.model_type == "qwen2", qwen3 = c.model_type == "qwen3";

  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("hidden_size");
  c.intermediate_size = r.positive("intermediate_size");
  c.num_hidden_layers = r.positive("num_hidden_layers");
  c.num_attention_heads = r.positive("num_attention_heads");
  c.num_key_value_heads = r.positive("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    r.bad("num_key_value_heads",
          fmt::format("{} does not divide num_attention_heads {}", c.num_key_value_heads, c.num_attention_heads));
  if (r.has("head_dim") || qwen3) {
    c.head_dim = r.positive("head_dim", int64_t(128));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      r.bad("hidden_size", fmt::format("{} is not divisible by num_attention_heads {} (and head_dim is not given)",
                                       c.hidden_size, c.num_attention_heads));
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) r.bad("head_dim", fmt::format("{} is odd; RoPE rotates pairs", c.head_dim));

  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  if (!(c.rms_norm_eps > 0)) r.bad("rms_norm_eps", fmt::format("must be positive, got {}", c.rms_norm_eps));
  read_rope(r, j, c);
  c.max_position_embeddings = r.positive("max_position_embeddings", llama ? 2048 : 32768);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.attention_bias = qwen2 ? true : r.boolean("attention_bias", false);
  c.mlp_bias = llama ? r.boolean("mlp_bias", false) : false;

  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") r.bad("hidden_act", fmt::format("'{}' is not supported (koff implements SwiGLU with silu)", act));
  if (r.boolean("use_sliding_window", false)) r.bad("use_sliding_window", "sliding-window attention is not supported");

  read_token_ids(r, j, c);
  c.torch_dtype = r.string("torch_dtype", r.string("dtype", ""));

  if (r.has("koff")) {
    c.koff = j["koff"];
    if (!c.koff.is_object()) r.bad("koff", "must be an object");
    read_layer_widths(r, c);
  }
  return c;
}

ModelConfig load_config(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  KOFF_CHECK(in.good(), "{}: cannot open config", file);
  std::ostringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", file, e.what());
  }
  return parse_config(j, file);
}

nlohmann::json to_json(const ModelConfig& c) {
  const bool llama = c.model_type == "llama";
  nlohmann::json j = {
      {"architectures", {architecture_of(c.model_type)}},
      {"model_type", c.model_type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"hidden_act", "silu"},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"max_position_embeddings", c.max_position_embeddings},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"attention_dropout", 0.0},
  };
  if (c.has_rope_scaling()) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (c.model_type != "qwen2") j["attention_bias"] = c.attention_bias;  // qwen2's biases are fixed by its code
  if (llama) j["mlp_bias"] = c.mlp_bias;
  if (c.model_type != "llama") j["use_sliding_window"] = false;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  if (!c.koff.is_null() || !c.layer_widths.empty()) {
    nlohmann::json koff = c.koff.is_null() ? nlohmann::json::object() : c.koff;
    if (!c.layer_widths.empty()) {
      nlohmann::json layers = nlohmann::json::array();
      for (const LayerWidths& w : c.layer_widths)
        layers.push_back({{"heads_per_kv_group", w.heads_per_kv_group},
                          {"num_attention_heads", w.num_attention_heads()},
                          {"num_key_value_heads", w.num_key_value_heads()},
                          {"intermediate_size", w.intermediate_size}});
      koff["layers"] = std::move(layers);
    } else {
      koff.erase("layers");
    }
    j["koff"] = std::move(koff);
  }
  return j;
}

void save_config(const std::filesystem::path& path, const ModelConfig& config) {
  write_file_atomic(path, to_json(config).dump(2) + "\n");
}

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  const int64_t d = c.hidden_size, hd = c.head_dim;
  std::vector<TensorSpec> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerWidths w = c.layer(i);
    const int64_t q = w.num_attention_heads() * hd, kv = w.num_key_value_heads() * hd, f = w.intermediate_size;
    const std::string p = fmt::format("model.layers.{}.", i);
    out.push_back({p + "input_layernorm.weight", {d}});
    out.push_back({p + "self_attn.q_proj.weight", {q, d}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, d}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, d}});
    out.push_back({p + "self_attn.o_proj.weight", {d, q}});
    if (c.has_qkv_bias()) {
      out.push_back({p + "self_attn.q_proj.bias", {q}});
      out.push_back({p + "self_attn.k_proj.bias", {kv}});
      out.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (c.has_o_bias()) out.push_back({p + "self_attn.o_proj.bias", {d}});
    if (c.has_qk_norm()) {
      out.push_back({p + "self_attn.q_norm.weight", {hd}});
      out.push_back({p + "self_attn.k_norm.weight", {hd}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {d}});
    out.push_back({p + "mlp.gate_proj.weight", {f, d}});
    out.push_back({p + "mlp.up_proj.weight", {f, d}});
    out.push_back({p + "mlp.down_proj.weight", {d, f}});
    if (c.mlp_bias) {
      out.push_back({p + "mlp.gate_proj.bias", {f}});
      out.push_back({p + "mlp.up_proj.bias", {f}});
      out.push_back({p + "mlp.down_proj.bias", {d}});
    }
  }
  out.push_back({"model.norm.weight", {d}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, d}});
  return out;
}

void check_tensors(const Checkpoint& ckpt, const ModelConfig& c) {
  std::map<std::string, Shape> expected;
  for (TensorSpec& s : expected_tensors(c)) expected.emplace(std::move(s.name), std::move(s.shape));
  if (c.tie_word_embeddings && ckpt.has("lm_head.weight"))
    expected.emplace("lm_head.weight", Shape{c.vocab_size, c.hidden_size});

  std::vector<std::string> missing, unexpected, misshaped, not_floating;
  for (const auto& [name, shape] : expected) {
    if (!ckpt.has(name)) {
      missing.push_back(fmt::format("{} {}", name, shape_str(shape)));
      continue;
    }
    const TensorInfo& info = ckpt.info(name);
    if (info.shape != shape)
      misshaped.push_back(
          fmt::format("{} is {} but the config needs {}", name, shape_str(info.shape), shape_str(shape)));
    if (!info.dtype || !is_floating(*info.dtype))
      not_floating.push_back(fmt::format("{} is {}", name, info.dtype_name));
  }
  for (const std::string& name : ckpt.names())
    if (!expected.count(name)) unexpected.push_back(name);
  if (missing.empty() && unexpected.empty() && misshaped.empty() && not_floating.empty()) return;

  std::string message = fmt::format("{}: the tensors do not match the config ({}, {} layers{}):", ckpt.path(),
                                    c.model_type, c.num_hidden_layers, c.is_pruned() ? ", pruned" : "");
  auto section = [&](const char* what, const std::vector<std::string>& items) {
    if (!items.empty()) message += fmt::format(" {} ({}): {};", what, items.size(), fmt::join(items, ", "));
  };
  section("missing", missing);
  section("unexpected", unexpected);
  section("mis-shaped", misshaped);
  section("not floating point", not_floating);
  message.pop_back();
  throw Error(message);
}

}  // namespace koff::io
