// The BPE trainer: a hand-computed merge sequence, and an 8k vocabulary trained on the test
// corpus that must load in Hugging Face `tokenizers` and give identical ids, and round-trip.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "tests/tokenizer/test_support.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace koff {
namespace {

// "aaabdaaabac" (one piece, seen once): (a,a) occurs 4 times -> merged first; then (aa,a) and (a,b) tie at 2
// and the smaller pair of ids wins, (a,b); then (aa,ab) at 2. Nothing else occurs twice.
TEST(BpeTrainer, HandComputedMerges) {
  BpeTrainerOptions opt;
  opt.vocab_size = 1000;
  opt.special_tokens = {"<|endoftext|>"};
  opt.min_frequency = 2;
  BpeTrainer trainer(opt);
  trainer.add_text("aaabdaaabac<|endoftext|>");  // the special token's text is not learned
  Tokenizer tok = Tokenizer::from_json(trainer.train(), "trained");
  const auto& merges = tok.model().merges();
  std::vector<std::pair<std::string, std::string>> want{{"a", "a"}, {"a", "b"}, {"aa", "ab"}};
  EXPECT_EQ(merges, want);
  EXPECT_EQ(tok.vocab_size(), 1u + 256u + 3u);
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 0u);
  EXPECT_EQ(tok.token_to_id("a"), 1u + 'a');  // bytes follow the specials in byte order
  auto ids = tok.encode("aaabdaaabac<|endoftext|>");
  std::vector<uint32_t> want_ids{*tok.token_to_id("aaab"), *tok.token_to_id("d"), *tok.token_to_id("aaab"),
                                 *tok.token_to_id("a"),    *tok.token_to_id("c"), 0};
  EXPECT_EQ(ids, want_ids);
}

TEST(BpeTrainer, RefusesBadOptions) {
  BpeTrainerOptions opt;
  opt.vocab_size = 100;
  EXPECT_THROW(BpeTrainer{opt}, TokenizerError);
  opt.vocab_size = 300;
  opt.special_tokens = {"<s>", "<s>"};
  EXPECT_THROW(BpeTrainer{opt}, TokenizerError);
  opt.special_tokens = {"<s>"};
  opt.bos_token = "<bos>";
  EXPECT_THROW(BpeTrainer{opt}, TokenizerError);
  opt.bos_token.reset();
  BpeTrainer trainer(opt);
  EXPECT_THROW(trainer.add_text("ok \xff bad"), TokenizerError);
}

// An 8k vocabulary learned from the corpus: HF loads it and encodes every document to the same
// ids as koff; decode(encode(x)) == x.
TEST(BpeTrainer, Trained8kVocabularyMatchesHuggingFace) {
  std::string dir = test::testdata_dir();
  std::string python = test::python(), source = test::source_dir();
  ASSERT_FALSE(dir.empty()) << "KOFF_TOKENIZER_TESTDATA is not set (run through ctest)";
  ASSERT_FALSE(python.empty() || source.empty()) << "KOFF_PYTHON / KOFF_TOKENIZER_SOURCE are not set";
  auto rows = test::read_jsonl(dir + "/corpus.jsonl");
  ASSERT_FALSE(rows.empty()) << dir << "/corpus.jsonl missing: the tokenizer_reference fixture did not run";
  std::vector<std::string> docs;
  for (const auto& r : rows) docs.push_back(r.get<std::string>());

  BpeTrainerOptions opt;
  opt.vocab_size = 8192;
  opt.special_tokens = {"<|endoftext|>", "<|bos|>", "<|pad|>"};
  opt.bos_token = "<|bos|>";
  opt.pattern = SplitPattern::Qwen2;
  opt.nfc = true;
  BpeTrainer trainer(opt);
  std::string all;
  for (const auto& d : docs) all += d + "\n<|endoftext|>";
  trainer.add_text(all);
  std::string path = dir + "/trained8k.tokenizer.json";
  trainer.train_to_file(path);

  Tokenizer tok = Tokenizer::from_file(path);
  EXPECT_EQ(tok.vocab_size(), 8192u);
  std::string ref = dir + "/trained8k.ids.jsonl";
  std::filesystem::remove(ref);
  std::string cmd = fmt::format("\"{}\" \"{}/tests/tokenizer/hf_encode.py\" \"{}\" \"{}/corpus.jsonl\" \"{}\"", python,
                                source, path, dir, ref);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "HF tokenizers could not load or encode " << path << ": " << cmd;
  auto want = test::read_jsonl(ref);
  ASSERT_EQ(want.size(), docs.size());
  auto got = tok.encode_batch(docs);
  size_t mismatches = 0, roundtrip = 0;
  std::string first;
  for (size_t d = 0; d < docs.size(); ++d) {
    if (got[d] != want[d].get<std::vector<uint32_t>>()) {
      if (!mismatches++) first = fmt::format("document {}: {}", d, nlohmann::json(docs[d]).dump().substr(0, 200));
    }
    // The BOS id decodes to its text; compare past it. NFC is the identity on most documents.
    std::string text = tok.decode(std::span(got[d]).subspan(1));
    if (text != docs[d] && text != tok.decode(tok.encode(text, false))) ++roundtrip;
  }
  std::printf("[ trainer ] 8k vocabulary: %zu documents, id mismatches vs HF %zu, round-trip failures %zu\n",
              docs.size(), mismatches, roundtrip);
  EXPECT_EQ(mismatches, 0u) << "first mismatch: " << first;
  EXPECT_EQ(roundtrip, 0u);
}

}  // namespace
}  // namespace koff
