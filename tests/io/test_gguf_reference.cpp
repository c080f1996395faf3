// The GGUF reader against independent references (tests/io/gguf_reference.py):
//  - dequantisation of every supported type against PyPI gguf's gguf.quants.dequantize, on random
//    blocks written by gguf's own GGUFWriter;
//  - SmolLM2-135M-Instruct (the real Q4_1/Q8_0 file that tools/fetch_smollm2.sh fetches at setup):
//    our logits against transformers loading the same file (from_pretrained(gguf_file=...)), and
//    our tokenizer built from the metadata against the one transformers builds, on the held-out
//    text of the four English domains (tools/build_domains.py, also run at setup).
#include <gtest/gtest.h>

#include "engine/data/corpus.h"
#include "engine/io/gguf.h"
#include "engine/io/npy.h"
#include "engine/nn/model_files.h"
#include "engine/nn/transformer.h"
#include "tests/io/test_support.h"

namespace koff::io::testing {
namespace {

class GgufReference : public ScratchDir {};

TEST_F(GgufReference, DequantisationMatchesPyPiGguf) {
  ASSERT_EQ(run_command(fmt::format("'{}' '{}/gguf_reference.py' quants '{}'", python(), test_source_dir(),
                                    dir_.string())),
            0)
      << "the gguf reference script failed (is PyPI gguf installed in " << python() << "?)";
  GgufFile f(path("quants.gguf"));
  for (const char* type : {"F32", "F16", "BF16", "F64", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K",
                           "Q6_K"}) {
    SCOPED_TRACE(type);
    ASSERT_TRUE(f.has_tensor(type));
    EXPECT_STREQ(ggml_type(f.tensor_info(type).type)->name, type);
    Tensor ours = f.dequantize(type);
    Tensor ref = load_npy(path(std::string(type) + ".npy"));
    ASSERT_EQ(ours.shape(), ref.shape());
    // The same f32 arithmetic (scale * quant [+ min]) in both: equal to the last bit, or within an
    // ulp where numpy fuses or reorders.
    EXPECT_LE(max_rel_error(ours, ref), 1e-6);
  }
}

fs::path repo_root() { return fs::path(test_source_dir()).parent_path().parent_path(); }
fs::path smollm2() { return repo_root() / ".cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"; }
fs::path domains() { return repo_root() / ".cache/domains"; }

class SmolLM2Reference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(fs::exists(smollm2())) << smollm2() << " is missing: run bash tools/setup.sh (it fetches SmolLM2)";
    ASSERT_TRUE(fs::exists(domains() / "novel" / "valid.txt"))
        << domains() << " is missing: run bash tools/setup.sh (it builds the English domains)";
    dir_ = fs::temp_directory_path() / fmt::format("koff_gguf_smollm2_{}", ::getpid());
    fs::create_directories(dir_);
    ASSERT_EQ(run_command(fmt::format("'{}' '{}/gguf_reference.py' model '{}' '{}' '{}'", python(), test_source_dir(),
                                      smollm2().string(), domains().string(), dir_.string())),
              0)
        << "the transformers GGUF reference failed";
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static fs::path dir_;
};
fs::path SmolLM2Reference::dir_;

TEST_F(SmolLM2Reference, LogitsMatchTransformers) {
  nn::Transformer model = nn::Transformer::load(smollm2().string(), DType::f32);
  EXPECT_EQ(model.config().num_hidden_layers, 30);
  EXPECT_EQ(model.config().num_key_value_heads, 3);
  for (int k = 0; fs::exists(dir_ / fmt::format("prompt{}_ids.npy", k)); ++k) {
    SCOPED_TRACE(k);
    Tensor ids = load_npy(dir_ / fmt::format("prompt{}_ids.npy", k));
    Tensor ref = load_npy(dir_ / fmt::format("prompt{}_logits.npy", k));
    ASSERT_EQ(ids.dtype(), DType::i64);
    const int64_t T = ids.numel();
    Tensor logits;
    {
      autograd::NoGradGuard no_grad;
      logits = model.logits(ids.reshape({1, T})).data().reshape({T, model.config().vocab_size});
    }
    ASSERT_EQ(logits.shape(), ref.shape());
    const double err = max_rel_error(logits, ref);
    EXPECT_LT(err, 1e-4);
    RecordProperty(fmt::format("prompt{}_max_rel_error", k), fmt::format("{:.2e}", err));
  }
}

TEST_F(SmolLM2Reference, TokenizerFromMetadataMatchesTransformersOnTheDomains) {
  Tokenizer tok = nn::load_tokenizer(smollm2().string());
  int domains_seen = 0;
  for (const auto& entry : fs::directory_iterator(domains())) {
    if (!fs::exists(entry.path() / "valid.txt")) continue;
    const std::string name = entry.path().filename().string();
    SCOPED_TRACE(name);
    ++domains_seen;
    const auto paragraphs = data::read_paragraphs((entry.path() / "valid.txt").string());
    Tensor ids = load_npy(dir_ / (name + "_ids.npy")), lengths = load_npy(dir_ / (name + "_lengths.npy"));
    ASSERT_EQ(static_cast<size_t>(lengths.numel()), paragraphs.size());
    const auto ours = tok.encode_batch(paragraphs, /*add_special_tokens=*/false);
    int64_t at = 0, mismatched = 0, total = 0;
    for (size_t p = 0; p < paragraphs.size(); ++p) {
      const int64_t n = lengths.data<int64_t>()[p];
      bool same = static_cast<int64_t>(ours[p].size()) == n;
      for (int64_t k = 0; same && k < n; ++k) same = ours[p][static_cast<size_t>(k)] == ids.data<int64_t>()[at + k];
      if (!same && mismatched++ < 3) ADD_FAILURE() << "paragraph " << p << " differs: " << paragraphs[p].substr(0, 80);
      at += n;
      total += n;
    }
    EXPECT_EQ(mismatched, 0) << total << " ids";
    RecordProperty(name + "_ids", std::to_string(total));
  }
  EXPECT_EQ(domains_seen, 4);
}

}  // namespace
}  // namespace koff::io::testing
