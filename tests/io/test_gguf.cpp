// The GGUF reader (engine/io/gguf.h): the format read back from files built byte by byte here,
// dequantisation by hand-computed blocks, every malformed input refused with one koff::Error, a
// bounded mutation fuzz of the header, and the model-level errors (metadata against tensor shapes,
// architecture, tokenizer kind, quantisation type). The references from PyPI gguf and transformers
// are in test_gguf_reference.cpp.
#include <gtest/gtest.h>

#include <random>

#include "engine/io/gguf.h"
#include "tests/io/test_support.h"

namespace koff::io::testing {
namespace {

// Builds GGUF bytes: metadata, tensor infos and data, laid out as the format says.
class GgufBuilder {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;

  GgufBuilder& str(const std::string& key, const std::string& v) { return kv(key, 8, sstr(v)); }
  GgufBuilder& u32(const std::string& key, uint32_t v) { return kv(key, 4, pod(v)); }
  GgufBuilder& i32(const std::string& key, int32_t v) { return kv(key, 5, pod(v)); }
  GgufBuilder& f32(const std::string& key, float v) { return kv(key, 6, pod(v)); }
  GgufBuilder& boolean(const std::string& key, bool v) { return kv(key, 7, std::string(1, v ? '\1' : '\0')); }
  GgufBuilder& u64(const std::string& key, uint64_t v) { return kv(key, 10, pod(v)); }
  GgufBuilder& f64(const std::string& key, double v) { return kv(key, 12, pod(v)); }
  GgufBuilder& i8(const std::string& key, int8_t v) { return kv(key, 1, pod(v)); }
  GgufBuilder& strings(const std::string& key, const std::vector<std::string>& v) {
    std::string body = pod<uint32_t>(8) + pod<uint64_t>(v.size());
    for (const auto& s : v) body += sstr(s);
    return kv(key, 9, body);
  }
  GgufBuilder& ints(const std::string& key, const std::vector<int32_t>& v) {
    std::string body = pod<uint32_t>(5) + pod<uint64_t>(v.size());
    for (int32_t x : v) body += pod(x);
    return kv(key, 9, body);
  }
  GgufBuilder& kv(const std::string& key, uint32_t type, const std::string& value) {
    kvs_ += sstr(key) + pod(type) + value;
    ++n_kv_;
    return *this;
  }
  // A tensor of `type` with the given ggml dims and raw bytes (placed at the next aligned offset).
  GgufBuilder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, const std::string& bytes,
                      std::optional<uint64_t> offset = std::nullopt) {
    while (data_.size() % alignment) data_ += '\0';
    const uint64_t off = offset.value_or(data_.size());
    infos_ += sstr(name) + pod<uint32_t>(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) infos_ += pod(d);
    infos_ += pod(type) + pod(off);
    data_ += bytes;
    ++n_tensors_;
    return *this;
  }
  GgufBuilder& f32_tensor(const std::string& name, std::vector<uint64_t> ne, float fill = 0.5f) {
    uint64_t n = 1;
    for (uint64_t d : ne) n *= d;
    std::string bytes;
    for (uint64_t i = 0; i < n; ++i) bytes += pod(fill + 0.001f * static_cast<float>(i % 97));
    return tensor(name, std::move(ne), 0, bytes);
  }
  std::string bytes() const {
    std::string out = "GGUF" + pod(version) + pod<uint64_t>(n_tensors_) + pod<uint64_t>(n_kv_) + kvs_ + infos_;
    while (out.size() % alignment) out += '\0';
    return out + data_;
  }

  template <class T>
  static std::string pod(T v) {
    return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static std::string sstr(const std::string& s) { return pod<uint64_t>(s.size()) + s; }

 private:
  std::string kvs_, infos_, data_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
};

std::string f16_bytes(float v) { return GgufBuilder::pod(f32_to_f16(v).bits); }

GgufFile open(const std::string& bytes) { return GgufFile::from_bytes(bytes, "test.gguf"); }

TEST(Gguf, ReadsEveryValueTypeAndTensorInfo) {
  GgufBuilder b;
  b.str("general.architecture", "llama").u32("a.u32", 7).i32("a.i32", -3).f32("a.f32", 1.5f).boolean("a.bool", true);
  b.u64("a.u64", 1ull << 40).f64("a.f64", -2.25).i8("a.i8", -100).strings("a.strs", {"x", "", "hello"});
  b.ints("a.ints", {1, -2, 3});
  b.f32_tensor("t", {4, 2});
  GgufFile f = open(b.bytes());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.keys().size(), 10u);
  EXPECT_EQ(f.keys()[0], "general.architecture");
  EXPECT_EQ(f.get("general.architecture").as_string("k"), "llama");
  EXPECT_EQ(f.get("a.u32").as_int("k"), 7);
  EXPECT_EQ(f.get("a.i32").as_int("k"), -3);
  EXPECT_EQ(f.get("a.f32").as_double("k"), 1.5);
  EXPECT_TRUE(f.get("a.bool").as_bool("k"));
  EXPECT_EQ(f.get("a.u64").as_int("k"), int64_t(1) << 40);
  EXPECT_EQ(f.get("a.f64").as_double("k"), -2.25);
  EXPECT_EQ(f.get("a.i8").as_int("k"), -100);
  const auto& strs = f.get("a.strs").as_array("k");
  ASSERT_EQ(strs.size(), 3u);
  EXPECT_EQ(strs[2].as_string("k"), "hello");
  EXPECT_EQ(f.get("a.ints").array[1].as_int("k"), -2);
  expect_error([&] { (void)f.get("a.u32").as_string("a.u32"); }, {"a.u32", "STRING", "UINT32"});
  expect_error([&] { (void)f.get("nope"); }, {"test.gguf", "'nope'", "missing"});

  ASSERT_EQ(f.tensors().size(), 1u);
  const auto& t = f.tensor_info("t");
  EXPECT_EQ(t.shape(), (Shape{2, 4}));  // ggml ne reversed
  EXPECT_EQ(t.nbytes, 32u);
  Tensor v = f.dequantize("t");
  EXPECT_EQ(v.shape(), (Shape{2, 4}));
  EXPECT_FLOAT_EQ(v.data<float>()[5], 0.5f + 0.005f);
}

TEST(Gguf, HonoursCustomAlignment) {
  GgufBuilder b;
  b.alignment = 64;
  b.u32("general.alignment", 64).f32_tensor("a", {3}).f32_tensor("b", {5});
  GgufFile f = open(b.bytes());
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.tensor_info("b").offset, 64u);
  EXPECT_FLOAT_EQ(f.dequantize("b").data<float>()[1], 0.501f);
}

TEST(Gguf, DequantisesHandBuiltBlocks) {
  // Q8_0: x = d * q
  std::string q8 = f16_bytes(0.5f);
  for (int j = 0; j < 32; ++j) q8 += static_cast<char>(static_cast<int8_t>(j - 16));
  // Q4_0: x = d * (nibble - 8); low nibbles are values 0..15, high nibbles 16..31
  std::string q4 = f16_bytes(2.0f);
  for (int j = 0; j < 16; ++j) q4 += static_cast<char>((j & 0xF) | ((15 - j) << 4));
  // Q4_1: x = d * nibble + m
  std::string q41 = f16_bytes(0.25f) + f16_bytes(-1.0f);
  for (int j = 0; j < 16; ++j) q41 += static_cast<char>(j | (j << 4));
  GgufBuilder b;
  b.tensor("q8", {32}, 8, q8).tensor("q4", {32}, 2, q4).tensor("q41", {32}, 3, q41);
  GgufFile f = open(b.bytes());
  Tensor a = f.dequantize("q8"), c = f.dequantize("q4"), d = f.dequantize("q41");
  for (int j = 0; j < 32; ++j) EXPECT_EQ(a.data<float>()[j], 0.5f * static_cast<float>(j - 16)) << j;
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(c.data<float>()[j], 2.0f * static_cast<float>(j - 8));
    EXPECT_EQ(c.data<float>()[j + 16], 2.0f * static_cast<float>(15 - j - 8));
    EXPECT_EQ(d.data<float>()[j], 0.25f * static_cast<float>(j) - 1.0f);
    EXPECT_EQ(d.data<float>()[j + 16], 0.25f * static_cast<float>(j) - 1.0f);
  }
}

TEST(Gguf, TypeTableKnowsBlockSizes) {
  EXPECT_EQ(ggml_type(12)->block_size, 256);
  EXPECT_EQ(ggml_type(12)->type_size, 144);
  EXPECT_STREQ(ggml_type(3)->name, "Q4_1");
  EXPECT_EQ(ggml_type(4), nullptr);  // retired (Q4_2)
  EXPECT_EQ(ggml_type(99), nullptr);
}

// --- malformed files: one koff::Error each, naming the file ------------------------------------

std::string valid_file() {
  GgufBuilder b;
  b.str("general.architecture", "llama").strings("tokenizer.ggml.tokens", {"a", "b", "c"}).f32("x", 1.0f);
  b.f32_tensor("w", {4, 3}).tensor("q", {32}, 8, f16_bytes(1.0f) + std::string(32, '\1'));
  return b.bytes();
}

TEST(Gguf, EveryTruncationIsAClearError) {
  const std::string full = valid_file();
  (void)open(full);
  for (size_t cut = 0; cut < full.size(); ++cut) {
    SCOPED_TRACE(cut);
    expect_error([&] { (void)open(full.substr(0, cut)); }, {"test.gguf"});
  }
}

TEST(Gguf, RefusesMalformedHeaders) {
  expect_error([] { (void)open("GGML" + std::string(20, '\0')); }, {"not a GGUF file"});
  {
    GgufBuilder b;
    b.version = 1;
    expect_error([&] { (void)open(b.bytes()); }, {"version 1", "not supported"});
  }
  {
    GgufBuilder b;
    b.kv("k", 13, "");
    expect_error([&] { (void)open(b.bytes()); }, {"'k'", "unknown value type 13"});
  }
  {
    GgufBuilder b;
    b.kv("k", 7, std::string(1, '\2'));
    expect_error([&] { (void)open(b.bytes()); }, {"'k'", "BOOL"});
  }
  {
    GgufBuilder b;
    b.u32("k", 1).u32("k", 2);
    expect_error([&] { (void)open(b.bytes()); }, {"'k'", "twice"});
  }
  {  // a string length far beyond the file
    GgufBuilder b;
    b.kv("k", 8, GgufBuilder::pod<uint64_t>(1ull << 62) + "abc");
    expect_error([&] { (void)open(b.bytes()); }, {"'k'", "claims"});
  }
  {  // an array count beyond the file
    GgufBuilder b;
    b.kv("k", 9, GgufBuilder::pod<uint32_t>(4) + GgufBuilder::pod<uint64_t>(1ull << 40));
    expect_error([&] { (void)open(b.bytes()); }, {"'k'", "elements"});
  }
  {
    GgufBuilder b;
    b.tensor("t", {32}, 99, std::string(32, '\0'));
    expect_error([&] { (void)open(b.bytes()); }, {"'t'", "unknown ggml type 99"});
  }
  {
    GgufBuilder b;
    b.tensor("t", {31}, 8, std::string(34, '\0'));
    expect_error([&] { (void)open(b.bytes()); }, {"'t'", "block size 32"});
  }
  {
    GgufBuilder b;
    b.f32_tensor("t", {4}).f32_tensor("t", {4});
    expect_error([&] { (void)open(b.bytes()); }, {"'t'", "twice"});
  }
  {
    GgufBuilder b;
    b.tensor("t", {1, 1, 1, 1, 1}, 0, std::string(4, '\0'));
    expect_error([&] { (void)open(b.bytes()); }, {"'t'", "5 dimensions"});
  }
  {
    GgufBuilder b;
    b.tensor("t", {4}, 0, std::string(16, '\0'), 8);
    expect_error([&] { (void)open(b.bytes()); }, {"'t'", "not aligned"});
  }
  {
    GgufBuilder b;
    b.f32_tensor("a", {16}).tensor("b", {4}, 0, std::string(16, '\0'), 32);
    expect_error([&] { (void)open(b.bytes()); }, {"'", "overlaps"});
  }
  {
    GgufBuilder b;
    b.tensor("t", {64}, 0, std::string(16, '\0'));
    expect_error([&] { (void)open(b.bytes()); }, {"'t'", "truncated"});
  }
  {  // a type the file may hold but koff cannot dequantise
    GgufBuilder b;
    b.tensor("iq", {256}, 16, std::string(66, '\0'));
    GgufFile f = open(b.bytes());
    expect_error([&] { (void)f.dequantize("iq"); }, {"'iq'", "IQ2_XXS", "cannot dequantise"});
  }
}

// A bounded, deterministic mutation fuzz: every mutant opens (then every dequantisable tensor
// reads) or is refused with koff::Error. Under the sanitize preset this catches out-of-bounds reads.
TEST(Gguf, HeaderFuzz) {
  std::vector<std::string> seeds = {valid_file()};
  {
    GgufBuilder b;
    b.strings("s", {"x", "yy"}).ints("i", {1, 2, 3}).tensor("q", {256}, 14, std::string(210, '\3'));
    seeds.push_back(b.bytes());
  }
  std::mt19937_64 rng(20261129);
  int opened = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string m = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !m.empty(); ++e) {
      const size_t pos = rng() % m.size();
      switch (rng() % 5) {
        case 0: m[pos] = static_cast<char>(rng()); break;                     // byte flip
        case 1: m.resize(pos); break;                                        // truncation
        case 2: m.insert(pos, 1 + rng() % 8, static_cast<char>(rng())); break;  // insertion
        case 3: m.erase(pos, 1 + rng() % 8); break;                          // deletion
        case 4:                                                              // a large count/length
          if (pos + 8 <= m.size()) {
            const uint64_t big = rng() % 2 ? ~0ull - rng() % 16 : (1ull << (rng() % 64));
            std::memcpy(m.data() + pos, &big, 8);
          }
          break;
      }
    }
    try {
      GgufFile f = open(m);
      for (const auto& t : f.tensors())
        if (ggml_type(t.type)->dequantizable) {
          try {
            (void)f.dequantize(t.name);
          } catch (const koff::Error&) {  // a non-finite value
          }
        }
      ++opened;
    } catch (const koff::Error& e) {
      ASSERT_NE(std::string(e.what()).find("test.gguf"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(opened, 0);
}

// --- model-level -------------------------------------------------------------------------------

// A tiny llama GGUF: 2 layers, hidden 8, 2 heads (head_dim 4), 1 KV head, ffn 16, vocab 6, tied.
GgufBuilder tiny_llama(int64_t claimed_ffn = 16) {
  GgufBuilder b;
  b.str("general.architecture", "llama").u32("llama.block_count", 2).u32("llama.embedding_length", 8);
  b.u32("llama.feed_forward_length", static_cast<uint32_t>(claimed_ffn)).u32("llama.attention.head_count", 2);
  b.u32("llama.attention.head_count_kv", 1).f32("llama.rope.freq_base", 10000.0f);
  b.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f).u32("llama.context_length", 64);
  b.str("tokenizer.ggml.model", "gpt2").str("tokenizer.ggml.pre", "smollm");
  b.strings("tokenizer.ggml.tokens", {"<|endoftext|>", "a", "b", "ab", "\xc4\xa0", "c"});
  b.ints("tokenizer.ggml.token_type", {3, 1, 1, 1, 1, 1}).strings("tokenizer.ggml.merges", {"a b"});
  b.u32("tokenizer.ggml.eos_token_id", 0);
  b.f32_tensor("token_embd.weight", {8, 6}).f32_tensor("output_norm.weight", {8});
  for (int i = 0; i < 2; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    b.f32_tensor(p + "attn_norm.weight", {8}).f32_tensor(p + "ffn_norm.weight", {8});
    b.f32_tensor(p + "attn_q.weight", {8, 8}).f32_tensor(p + "attn_k.weight", {8, 4});
    b.f32_tensor(p + "attn_v.weight", {8, 4}).f32_tensor(p + "attn_output.weight", {8, 8});
    b.f32_tensor(p + "ffn_gate.weight", {8, 16}).f32_tensor(p + "ffn_up.weight", {8, 16});
    b.f32_tensor(p + "ffn_down.weight", {16, 8});
  }
  return b;
}

TEST(GgufModel, ConfigAndTensorsFromTheFile) {
  GgufFile f = open(tiny_llama().bytes());
  ModelConfig c = gguf_model_config(f);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.num_key_value_heads, 1);
  EXPECT_EQ(c.vocab_size, 6);  // from the token list
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{0});
  auto tensors = gguf_model_tensors(f, c, DType::f32);
  EXPECT_EQ(tensors.size(), expected_tensors(c).size());
  // q_proj rows un-permuted: HF row h*4 + i*2 + j comes from GGUF row h*4 + 2j + i.
  const Tensor raw = f.dequantize("blk.0.attn_q.weight");
  for (const auto& [name, t] : tensors) {
    if (name != "model.layers.0.self_attn.q_proj.weight") continue;
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j)
          for (int col = 0; col < 8; ++col)
            EXPECT_EQ(t.data<float>()[(h * 4 + i * 2 + j) * 8 + col], raw.data<float>()[(h * 4 + 2 * j + i) * 8 + col]);
  }
}

TEST(GgufModel, MetadataThatContradictsShapesIsOneError) {
  GgufFile f = open(tiny_llama(/*claimed_ffn=*/12).bytes());
  ModelConfig c = gguf_model_config(f);
  expect_error([&] { (void)gguf_model_tensors(f, c, DType::f32); },
               {"test.gguf", "do not match the metadata", "mis-shaped (6)", "blk.0.ffn_gate.weight is [16, 8]",
                "implies [12, 8]"});
}

TEST(GgufModel, RefusesWhatItCannotRun) {
  {
    GgufBuilder b;
    b.str("general.architecture", "gemma3");
    expect_error([&] { (void)gguf_model_config(open(b.bytes())); }, {"'gemma3'", "not supported"});
  }
  {
    GgufBuilder b;
    b.str("general.architecture", "llama").u32("llama.block_count", 2);
    expect_error([&] { (void)gguf_model_config(open(b.bytes())); }, {"llama.embedding_length", "missing"});
  }
  {
    GgufBuilder b = tiny_llama();
    b.f32_tensor("rope_freqs.weight", {2});
    expect_error([&] { (void)gguf_model_config(open(b.bytes())); }, {"rope_freqs"});
  }
  {
    GgufBuilder b;
    b.str("tokenizer.ggml.model", "llama");
    expect_error([&] { (void)gguf_tokenizer_json(open(b.bytes())); }, {"'llama'", "not supported"});
  }
}

TEST(GgufModel, TokenizerFromMetadata) {
  GgufFile f = open(tiny_llama().bytes());
  const nlohmann::json j = gguf_tokenizer_json(f);
  EXPECT_EQ(j["model"]["vocab"]["ab"], 3);
  EXPECT_EQ(j["model"]["merges"][0], "a b");
  ASSERT_EQ(j["added_tokens"].size(), 1u);
  EXPECT_EQ(j["added_tokens"][0]["content"], "<|endoftext|>");
  EXPECT_TRUE(j["added_tokens"][0]["special"].get<bool>());
  EXPECT_EQ(j["pre_tokenizer"]["type"], "ByteLevel");
}

}  // namespace
}  // namespace koff::io::testing
