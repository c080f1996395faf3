// The BPE model of tokenizer.json: turns one pre-tokenized piece into token ids.
//
// Merging follows Hugging Face `tokenizers` (models/bpe/word.rs) exactly: the piece starts as one
// symbol per character (or per byte for byte-level vocabularies), the symbols form a doubly linked
// list, and a min-heap of candidate pairs ordered by (merge rank, position) pops the next merge;
// stale heap entries are skipped. That is O(n log n) instead of the textbook rescan, and it merges
// in the same order as HF, so ties resolve identically.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace koff {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>>;

// Open-addressing map from a pair of token ids to (merge rank, id of the merged token).
class MergeMap {
 public:
  struct Value {
    uint32_t rank;
    uint32_t new_id;
  };
  void reserve(size_t n);
  void insert(uint32_t left, uint32_t right, Value value);  // a later insert of the same pair wins, as in HF
  const Value* find(uint32_t left, uint32_t right) const {
    if (slots_.empty()) return nullptr;
    uint64_t key = (static_cast<uint64_t>(left) << 32) | right;
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s.value;
      if (s.key == kEmpty) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Slot {
    uint64_t key = kEmpty;
    Value value{};
  };
  static uint64_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

struct BpeConfig {
  Vocab vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  // Pieces arrive as raw bytes and the vocabulary is written in the byte-level alphabet
  // (a ByteLevel pre-tokenizer precedes the model).
  bool byte_level_input = false;
};

class BpeModel {
 public:
  // Throws TokenizerError (naming `source`) when a merge names a token missing from the vocab.
  BpeModel(BpeConfig config, const std::string& source);

  // Appends the ids of one piece to `out`. Uses a per-thread cache of recent pieces.
  void tokenize(std::string_view piece, std::vector<uint32_t>& out) const;

  const Vocab& vocab() const { return config_.vocab; }
  const std::vector<std::pair<std::string, std::string>>& merges() const { return config_.merges; }
  const BpeConfig& config() const { return config_; }
  std::optional<uint32_t> token_to_id(std::string_view token) const;
  // Empty view when the id is not in the vocabulary.
  std::string_view id_to_token(uint32_t id) const;
  uint32_t max_id() const { return static_cast<uint32_t>(id_to_token_.size()) - 1; }

 private:
  void tokenize_uncached(std::string_view piece, std::vector<uint32_t>& out) const;
  // Builds the initial symbols from model-alphabet text (HF's merge_word before merge_all).
  void initial_symbols_from_text(std::string_view text, std::vector<uint32_t>& ids, std::vector<uint32_t>& lens) const;
  void merge_all(std::vector<uint32_t>& ids) const;

  BpeConfig config_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  MergeMap merge_map_;
  std::optional<uint32_t> unk_id_;
  // Byte-level fast path: the id of each byte's one-character token (-1 where absent), and the
  // vocabulary keyed by raw bytes for ignore_merges.
  bool byte_fast_path_ = false;
  int64_t byte_ids_[256];
  Vocab raw_vocab_;
  int64_t byte_fallback_ids_[256];  // ids of "<0xXX>" tokens, -1 where absent
  uint64_t serial_;                 // identifies this model to the per-thread caches
};

}  // namespace koff
