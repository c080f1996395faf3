// koff::Tokenizer: reads a Hugging Face tokenizer.json and encodes text to exactly the ids that HF
// `tokenizers` produces (and decodes them back).
//
// The pipeline mirrors HF's, stage for stage, because each stage's boundaries change the ids:
//   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest match,
//      with lstrip/rstrip/single_word), before anything else sees it;
//   2. each remaining segment is normalized (NFC, Prepend, Replace, ...), then added tokens with
//      normalized=true are cut out of the normalized text;
//   3. the pre-tokenizer splits segments into pieces (the model's regex, ByteLevel, Metaspace);
//   4. the BPE model turns each piece into ids (bpe.h);
//   5. the post-processor adds BOS/EOS (TemplateProcessing) when add_special_tokens is set.
// Supported: model BPE; normalizers NFC/NFD/NFKC/NFKD/Prepend/Replace(String)/Sequence;
// pre-tokenizers Split(GPT-2/Llama 3/Qwen regex, Isolated)/ByteLevel/Metaspace/Sequence;
// post-processors ByteLevel/TemplateProcessing/Sequence; decoders ByteLevel/Replace/ByteFallback/
// Fuse/Strip/Metaspace/Sequence. Anything else is refused with a TokenizerError naming the field.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer_error.h"

namespace koff {

struct AddedToken {
  uint32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool normalized = true;    // matched in the normalized text rather than the raw text
  bool single_word = false;  // only matched when not inside a word
};

class Tokenizer {
 public:
  // Throws TokenizerError naming the file and the field when the file is missing, is not JSON,
  // or uses something this reader does not support.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json(std::string_view json_text, const std::string& source = "tokenizer.json");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text (UTF-8; invalid UTF-8 throws TokenizerError with the byte offset) to ids. Inputs of
  // at least parallel_threshold() bytes are split across threads (see set_num_threads).
  std::vector<uint32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Many texts at once, spread over the threads; the result is in input order.
  std::vector<std::vector<uint32_t>> encode_batch(std::span<const std::string> texts,
                                                  bool add_special_tokens = true) const;
  // Ids to text, as HF's decode: added tokens by content, then the decoder chain (byte-level
  // decoding replaces invalid UTF-8 with U+FFFD). An id outside the vocabulary throws.
  std::string decode(std::span<const uint32_t> ids, bool skip_special_tokens = false) const;

  // Threads used by encode (long inputs) and encode_batch; 0 = std::thread::hardware_concurrency.
  void set_num_threads(int threads) { num_threads_ = threads; }
  int num_threads() const;
  static constexpr size_t parallel_threshold() { return 64 * 1024; }

  // One more than the largest id (model vocabulary and added tokens).
  size_t vocab_size() const;
  std::optional<uint32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(uint32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;
  const BpeModel& model() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int num_threads_ = 0;
};

}  // namespace koff
