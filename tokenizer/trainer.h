// koff::BpeTrainer: learns a byte-level BPE vocabulary from text and writes a tokenizer.json that
// koff::Tokenizer and Hugging Face `tokenizers` both load (and encode identically).
//
// The recipe is GPT-2's as HF implements it: text is split by the chosen pre-tokenizer pattern
// (special tokens are cut out first and never learned), each distinct piece is counted, every
// piece starts as its bytes (all 256 are in the vocabulary, so nothing is ever unknown), and the
// most frequent adjacent pair is merged until the vocabulary has the requested size. Pair counts
// are updated incrementally (only words containing the merged pair are touched) and the best pair
// comes from a lazy max-heap, so training is fast enough for hundreds of MB.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"

namespace koff {

struct BpeTrainerOptions {
  size_t vocab_size = 8192;                 // including special tokens and the 256 bytes
  std::vector<std::string> special_tokens;  // ids 0, 1, ... in this order
  SplitPattern pattern = SplitPattern::Llama3;
  uint64_t min_frequency = 2;            // pairs seen fewer times are never merged
  bool nfc = false;                      // add an NFC normalizer (and train on NFC text)
  std::optional<std::string> bos_token;  // prepended by the post-processor; must be a special token
  int threads = 0;                       // for counting; 0 = hardware concurrency
};

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainerOptions options);

  // Counts the pieces of `text` (valid UTF-8, else TokenizerError naming `source`).
  void add_text(std::string_view text, const std::string& source = "text");
  void add_file(const std::string& path);

  // Runs the merges. Returns the tokenizer.json text; call once.
  std::string train();
  // train() and write the result to `path` (through a temporary file and a rename).
  void train_to_file(const std::string& path);

  size_t distinct_pieces() const { return counts_.size(); }
  uint64_t bytes_seen() const { return bytes_seen_; }

 private:
  void count_segment(std::string_view text);

  BpeTrainerOptions options_;
  std::unordered_map<std::string, uint64_t, StringHash, std::equal_to<>> counts_;
  uint64_t bytes_seen_ = 0;
};

}  // namespace koff
