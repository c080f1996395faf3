// A GGUF file as a koff model: config from the metadata, llama.cpp tensor names mapped to Hugging
// Face's (with q/k rows un-permuted), and the tokenizer from tokenizer.ggml.*. See gguf.h.
#include <fmt/ranges.h>

#include <map>
#include <set>

#include "engine/io/gguf.h"

namespace koff::io {

namespace {

std::string shape_text(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

// `<arch>.<key>` as an integer / double, with a default when absent (nullopt: required).
int64_t meta_int(const GgufFile& f, const std::string& key, std::optional<int64_t> fallback = std::nullopt) {
  if (!f.has(key)) {
    KOFF_CHECK(fallback.has_value(), "{}: metadata key '{}' is missing", f.path(), key);
    return *fallback;
  }
  const GgufValue& v = f.get(key);
  KOFF_CHECK(v.type != GgufValueType::array, "{}: '{}' is a per-layer array; koff needs one value for every layer",
             f.path(), key);
  return v.as_int(fmt::format("{}: '{}'", f.path(), key));
}

double meta_double(const GgufFile& f, const std::string& key, double fallback) {
  if (!f.has(key)) return fallback;
  return f.get(key).as_double(fmt::format("{}: '{}'", f.path(), key));
}

// llama.cpp's name of each Hugging Face weight (the inverse of its converter's tensor map).
std::map<std::string, std::string> hf_names(const ModelConfig& c) {
  std::map<std::string, std::string> m = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  const std::pair<const char*, const char*> per_layer[] = {
      {"attn_norm.weight", "input_layernorm.weight"},   {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},     {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},     {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},         {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},         {"attn_output.bias", "self_attn.o_proj.bias"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"}, {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},      {"ffn_gate.bias", "mlp.gate_proj.bias"},
      {"ffn_up.bias", "mlp.up_proj.bias"},              {"ffn_down.bias", "mlp.down_proj.bias"},
  };
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    for (const auto& [g, h] : per_layer) m[fmt::format("blk.{}.{}", i, g)] = fmt::format("model.layers.{}.{}", i, h);
  return m;
}

// Undo llama.cpp's q/k permutation. Its converter stores, for each head of width hd, row
// (half i, index j) of Hugging Face's rotate-half layout at position 2 j + i, so that its RoPE kernel
// rotates adjacent pairs:  gguf[h*hd + 2j + i] = hf[h*hd + i*hd/2 + j]   (i in {0,1}, j < hd/2).
Tensor unpermute_rows(const Tensor& w, int64_t n_heads, int64_t head_dim) {
  const int64_t rows = w.shape()[0], cols = w.numel() / rows, half = head_dim / 2;
  KOFF_CHECK(rows == n_heads * head_dim && head_dim % 2 == 0, "cannot un-permute {} rows as {} heads of {}", rows,
             n_heads, head_dim);
  Tensor out = Tensor::empty(w.shape(), DType::f32);
  const float* src = w.data<float>();
  float* dst = out.data<float>();
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < half; ++j)
        std::copy_n(src + (h * head_dim + 2 * j + i) * cols, cols, dst + (h * head_dim + i * half + j) * cols);
  return out;
}

}  // namespace

ModelConfig gguf_model_config(const GgufFile& f) {
  const std::string arch = f.get("general.architecture").as_string(f.path() + ": general.architecture");
  KOFF_CHECK(arch == "llama" || arch == "qwen2" || arch == "qwen3",
             "{}: general.architecture '{}' is not supported (koff runs llama, qwen2 and qwen3)", f.path(), arch);
  auto key = [&](const char* k) { return arch + "." + k; };
  KOFF_CHECK(!f.has_tensor("rope_freqs.weight"),
             "{}: the file carries rope_freqs.weight (Llama 3.1+ RoPE scaling), which koff does not read from GGUF yet; "
             "use the Hugging Face checkpoint",
             f.path());
  if (f.has(key("rope.scaling.type"))) {
    const std::string t = f.get(key("rope.scaling.type")).as_string(key("rope.scaling.type"));
    KOFF_CHECK(t == "none", "{}: RoPE scaling '{}' is not supported", f.path(), t);
  }

  ModelConfig c;
  c.model_type = arch;
  c.hidden_size = meta_int(f, key("embedding_length"));
  c.intermediate_size = meta_int(f, key("feed_forward_length"));
  c.num_hidden_layers = meta_int(f, key("block_count"));
  c.num_attention_heads = meta_int(f, key("attention.head_count"));
  c.num_key_value_heads = meta_int(f, key("attention.head_count_kv"), c.num_attention_heads);
  KOFF_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 && c.num_attention_heads > 0 &&
                 c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
             "{}: inconsistent sizes: hidden {}, ffn {}, layers {}, heads {}, kv heads {}", f.path(), c.hidden_size,
             c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads);
  KOFF_CHECK(c.num_hidden_layers <= 4096 && c.num_attention_heads <= 4096, "{}: implausible layer or head count",
             f.path());
  const int64_t default_hd = c.hidden_size / c.num_attention_heads;
  c.head_dim = meta_int(f, key("attention.key_length"), default_hd);
  KOFF_CHECK(meta_int(f, key("attention.value_length"), c.head_dim) == c.head_dim,
             "{}: value head size differs from key head size; koff needs them equal", f.path());
  KOFF_CHECK(meta_int(f, key("rope.dimension_count"), c.head_dim) == c.head_dim,
             "{}: RoPE on part of each head ({} of {} dims) is not supported", f.path(),
             meta_int(f, key("rope.dimension_count")), c.head_dim);
  c.rms_norm_eps = meta_double(f, key("attention.layer_norm_rms_epsilon"), 1e-6);
  c.rope_theta = meta_double(f, key("rope.freq_base"), 10000.0);
  c.max_position_embeddings = meta_int(f, key("context_length"), 2048);

  // Vocabulary: the key, else the tokenizer's token list, else the embedding's rows.
  if (f.has(key("vocab_size"))) {
    c.vocab_size = meta_int(f, key("vocab_size"));
  } else if (f.has("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int64_t>(f.get("tokenizer.ggml.tokens").as_array("tokenizer.ggml.tokens").size());
  } else {
    KOFF_CHECK(f.has_tensor("token_embd.weight"), "{}: no vocabulary size and no token_embd.weight", f.path());
    c.vocab_size = f.tensor_info("token_embd.weight").shape()[0];
  }
  c.tie_word_embeddings = !f.has_tensor("output.weight");
  c.attention_bias = arch == "qwen2" || f.has_tensor("blk.0.attn_q.bias");
  c.mlp_bias = arch == "llama" && f.has_tensor("blk.0.ffn_gate.bias");
  if (f.has("tokenizer.ggml.bos_token_id")) c.bos_token_id = meta_int(f, "tokenizer.ggml.bos_token_id");
  if (f.has("tokenizer.ggml.eos_token_id")) c.eos_token_ids = {meta_int(f, "tokenizer.ggml.eos_token_id")};
  return c;
}

std::vector<std::pair<std::string, Tensor>> gguf_model_tensors(const GgufFile& f, const ModelConfig& c, DType dtype) {
  std::map<std::string, Shape> expected;
  for (TensorSpec& s : expected_tensors(c)) expected.emplace(std::move(s.name), std::move(s.shape));
  const auto names = hf_names(c);

  // Check everything before dequantising anything, and report every problem at once.
  std::vector<std::string> unexpected, misshaped, missing;
  std::map<std::string, const GgufTensorInfo*> found;  // hf name -> info
  for (const GgufTensorInfo& info : f.tensors()) {
    auto it = names.find(info.name);
    if (it == names.end() || !expected.count(it->second)) {
      unexpected.push_back(info.name);
      continue;
    }
    const Shape& want = expected.at(it->second);
    if (info.shape() != want)
      misshaped.push_back(fmt::format("{} is {} but the metadata implies {}", info.name, shape_text(info.shape()),
                                      shape_text(want)));
    found[it->second] = &info;
  }
  for (const auto& [hf, gguf] : names)
    if (expected.count(gguf) && !found.count(gguf)) missing.push_back(hf);
  if (!unexpected.empty() || !misshaped.empty() || !missing.empty()) {
    std::string message = fmt::format("{}: the tensors do not match the metadata ({}, {} layers, hidden {}, {} heads, "
                                      "{} kv heads, ffn {}, vocab {}):",
                                      f.path(), c.model_type, c.num_hidden_layers, c.hidden_size,
                                      c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, c.vocab_size);
    auto section = [&](const char* what, const std::vector<std::string>& items) {
      if (items.empty()) return;
      const size_t shown = std::min<size_t>(items.size(), 6);
      message += fmt::format(" {} ({}): {}{};", what, items.size(),
                             fmt::join(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(shown), ", "),
                             items.size() > shown ? ", ..." : "");
    };
    section("mis-shaped", misshaped);
    section("missing", missing);
    section("unknown", unexpected);
    message.pop_back();
    throw Error(message);
  }

  std::vector<std::pair<std::string, Tensor>> out;
  for (const TensorSpec& spec : expected_tensors(c)) {
    const GgufTensorInfo* info = found.at(spec.name);
    Tensor t = f.dequantize(info->name);
    // Only the llama converter permutes (Qwen's RoPE is already rotate-half in llama.cpp).
    if (c.model_type == "llama") {
      const bool is_q = spec.name.find("self_attn.q_proj.") != std::string::npos;
      const bool is_k = spec.name.find("self_attn.k_proj.") != std::string::npos;
      if (is_q) t = unpermute_rows(t, c.num_attention_heads, c.head_dim);
      if (is_k) t = unpermute_rows(t, c.num_key_value_heads, c.head_dim);
    }
    out.emplace_back(spec.name, dtype == DType::f32 ? t : t.to(dtype));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------------

namespace {

// GPT-2's byte -> printable character map (the alphabet of byte-level vocabularies).
std::vector<std::string> byte_alphabet() {
  std::vector<std::string> out(256);
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  int next = 256;
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  for (int b = 0; b < 256; ++b) out[b] = utf8(direct[b] ? b : next++);
  return out;
}

// The pre-tokenizer each tokenizer.ggml.pre stands for, as in the tokenizer.json llama.cpp's
// converter read it from (llama-vocab.cpp maps the same names to the same regexes); others keep GPT-2's.
const char* kLlama3Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char* kQwen2Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

const char* kQwen35Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct PreTokenizerFor {
  const char* split = nullptr;  // nullptr: GPT-2's byte-level regex
  // Llama 3's tokenizer.json has "ignore_merges": true: a pre-token that is itself in the vocabulary
  // is that one token, whatever the merges would make of it (llama.cpp: vocab.ignore_merges).
  bool ignore_merges = false;
  bool nfc = false;  // Qwen 2/2.5/3's tokenizer.json normalises to NFC first
};

PreTokenizerFor pre_tokenizer_for(const std::string& pre) {
  // The names llama.cpp gives ignore_merges with Llama 3's regex (LLAMA_VOCAB_PRE_TYPE_LLAMA3).
  static const std::set<std::string> llama3 = {"llama3", "llama-v3",  "llama-bpe", "falcon3",     "falcon-h1",
                                               "pixtral", "midm-2.0", "lfm2",      "jina-v5-nano"};
  // Same regex, merges always applied.
  static const std::set<std::string> llama3_regex = {"dbrx", "smaug-bpe"};
  static const std::set<std::string> qwen2 = {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"};
  if (llama3.count(pre)) return {kLlama3Split, true, false};
  if (llama3_regex.count(pre)) return {kLlama3Split, false, false};
  if (qwen2.count(pre)) return {kQwen2Split, false, true};
  // Qwen 3.5's tokenizer.json has no normalizer: llama.cpp's vectors keep "e\u0301" as e + U+0301.
  if (pre == "qwen35") return {kQwen35Split, false, false};
  return {};
}

}  // namespace

nlohmann::json gguf_tokenizer_json(const GgufFile& f) {
  using json = nlohmann::json;
  KOFF_CHECK(f.has("tokenizer.ggml.model"), "{}: the file has no tokenizer (tokenizer.ggml.model is missing)",
             f.path());
  const std::string model = f.get("tokenizer.ggml.model").as_string("tokenizer.ggml.model");
  KOFF_CHECK(model == "gpt2",
             "{}: tokenizer.ggml.model '{}' is not supported (koff builds byte-level BPE tokenizers, 'gpt2', as used "
             "by Llama 3, Qwen and SmolLM2)",
             f.path(), model);
  const auto& tokens = f.get("tokenizer.ggml.tokens").as_array(f.path() + ": tokenizer.ggml.tokens");
  KOFF_CHECK(f.has("tokenizer.ggml.merges"), "{}: tokenizer.ggml.merges is missing", f.path());
  const auto& merges = f.get("tokenizer.ggml.merges").as_array(f.path() + ": tokenizer.ggml.merges");
  std::vector<int64_t> types(tokens.size(), 1);
  if (f.has("tokenizer.ggml.token_type")) {
    const auto& tt = f.get("tokenizer.ggml.token_type").as_array(f.path() + ": tokenizer.ggml.token_type");
    KOFF_CHECK(tt.size() == tokens.size(), "{}: {} token types for {} tokens", f.path(), tt.size(), tokens.size());
    for (size_t i = 0; i < tt.size(); ++i) types[i] = tt[i].as_int("tokenizer.ggml.token_type");
  }

  // Vocabulary as transformers spells it: a token outside the byte alphabet is re-spelled byte by byte.
  const std::vector<std::string> alphabet = byte_alphabet();
  std::set<std::string> alphabet_chars(alphabet.begin(), alphabet.end());
  auto in_alphabet = [&](const std::string& s) {
    for (size_t k = 0; k < s.size();) {
      const auto c = static_cast<unsigned char>(s[k]);
      const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      if (!alphabet_chars.count(s.substr(k, len))) return false;
      k += len;
    }
    return true;
  };
  json vocab = json::object();
  json added = json::array();
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& t = tokens[id].as_string("tokenizer.ggml.tokens");
    const bool spelled = in_alphabet(t);
    std::string key = t;
    if (!spelled) {
      key.clear();
      for (unsigned char b : t) key += alphabet[b];
    }
    if (!vocab.contains(key)) vocab[key] = id;
    // 3 = CONTROL (special added token, when spelled in the alphabet), 4 = USER_DEFINED (plain added token).
    if ((types[id] == 3 && spelled) || types[id] == 4)
      added.push_back({{"id", id}, {"content", t}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", types[id] == 3}});
  }
  json merge_list = json::array();
  for (const auto& m : merges) merge_list.push_back(m.as_string("tokenizer.ggml.merges"));

  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  const std::string pre = f.has("tokenizer.ggml.pre") ? f.get("tokenizer.ggml.pre").as_string("tokenizer.ggml.pre") : "";
  const PreTokenizerFor pre_tok = pre_tokenizer_for(pre);
  j["normalizer"] = pre_tok.nfc ? json{{"type", "NFC"}} : json(nullptr);
  if (const char* split = pre_tok.split) {
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({{{"type", "Split"},
                                                          {"pattern", {{"Regex", split}}},
                                                          {"behavior", "Isolated"},
                                                          {"invert", false}},
                                                         {{"type", "ByteLevel"},
                                                          {"add_prefix_space", false},
                                                          {"trim_offsets", true},
                                                          {"use_regex", false}}})}};
  } else {
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  }
  const bool add_bos =
      f.has("tokenizer.ggml.add_bos_token") && f.get("tokenizer.ggml.add_bos_token").as_bool("tokenizer.ggml.add_bos_token");
  if (add_bos && f.has("tokenizer.ggml.bos_token_id")) {
    const int64_t bos = f.get("tokenizer.ggml.bos_token_id").as_int("tokenizer.ggml.bos_token_id");
    KOFF_CHECK(bos >= 0 && static_cast<size_t>(bos) < tokens.size(), "{}: bos token id {} is out of range", f.path(),
               bos);
    const std::string& bos_text = tokens[static_cast<size_t>(bos)].s;
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", bos_text}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array({{{"SpecialToken", {{"id", bos_text}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"SpecialToken", {{"id", bos_text}, {"type_id", 1}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens", {{bos_text, {{"id", bos_text}, {"ids", json::array({bos})}, {"tokens", json::array({bos_text})}}}}}};
  } else {
    j["post_processor"] = nullptr;
  }
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},         {"dropout", nullptr},        {"unk_token", nullptr},
                {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}, {"fuse_unk", false},
                {"byte_fallback", false},  {"ignore_merges", pre_tok.ignore_merges},    {"vocab", vocab},
                {"merges", merge_list}};
  return j;
}

}  // namespace koff::io
