// Internal: the parsed form of a tokenizer.json, shared by the reader (tokenizer_json.cpp) and the
// encoder/decoder (tokenizer.cpp). Not part of the public interface.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace koff {

// Leftmost-longest matcher over the added tokens' contents (HF uses aho-corasick with
// MatchKind::LeftmostLongest): of all matches starting at the leftmost possible byte, the longest.
class AddedTokenMatcher {
 public:
  void add(std::string_view pattern, int32_t token_index);
  bool empty() const { return nodes_.size() <= 1; }
  struct Match {
    size_t begin, end;
    int32_t token_index;
  };
  std::optional<Match> find(std::string_view text, size_t from) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token_index = -1;
  };
  std::vector<Node> nodes_{Node{}};
  bool first_byte_[256] = {};
};

struct NormalizerStep {
  enum class Kind { Unicode, Prepend, Replace };
  Kind kind{};
  unicode::NormalizationForm form = unicode::NormalizationForm::NFC;
  std::string pattern;  // Replace: the string to find; Prepend: the prefix
  std::string content;  // Replace: its replacement
};

enum class PrependScheme { Always, First, Never };

struct PreTokenizerStep {
  enum class Kind { Split, ByteLevel, Metaspace };
  Kind kind{};
  SplitPattern pattern = SplitPattern::Gpt2;  // Split
  bool add_prefix_space = false;              // ByteLevel
  bool use_regex = false;                     // ByteLevel: split by the GPT-2 pattern first
  std::string replacement;                    // Metaspace, UTF-8 of one character
  PrependScheme prepend_scheme = PrependScheme::Always;
  bool split = true;  // Metaspace: split at each replacement character
};

struct DecoderStep {
  enum class Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace };
  Kind kind{};
  std::string pattern, content;  // Replace; Strip: content is the character; Metaspace: replacement
  size_t start = 0, stop = 0;    // Strip
  PrependScheme prepend_scheme = PrependScheme::Always;  // Metaspace
};

struct Tokenizer::Impl {
  std::string source;
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added;
  std::vector<int32_t> added_by_id;  // id -> index into `added` (the last one with that id), or -1
  std::unordered_map<std::string, uint32_t> added_by_content;  // the first token with that content
  std::unordered_set<std::string> special_contents;            // decode(skip_special_tokens) skips these by text, as HF
  AddedTokenMatcher raw_matcher;                               // added tokens with normalized=false
  AddedTokenMatcher normalized_matcher;                        // normalized=true, matched on their normalized content
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  // TemplateProcessing "single": ids to put before and after the sequence.
  std::vector<uint32_t> prefix_ids, suffix_ids;
  std::vector<DecoderStep> decoders;
  bool has_decoder = false;
  // Encoding may split one long segment across threads (see is_safe_split_point).
  bool chunkable = false;
  uint32_t max_id = 0;

  std::string normalize(std::string_view text) const;
  void encode_segment(std::string_view text, bool at_start, std::vector<uint32_t>& ids, int threads) const;
  void encode_pieces(std::string_view text, bool at_start, std::vector<uint32_t>& ids) const;
  void run_steps(size_t step, std::string_view piece, bool first, std::vector<uint32_t>& ids) const;
};

}  // namespace koff
