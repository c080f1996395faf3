#include "tokenizer/trainer.h"

#include <fmt/core.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_set>

#include "tokenizer/byte_level.h"
#include "tokenizer/thread_pool.h"
#include "tokenizer/tokenizer_error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace koff {

namespace {

using PieceCounts = std::unordered_map<std::string, uint64_t, StringHash, std::equal_to<>>;

void count_pieces(SplitPattern pattern, std::string_view text, PieceCounts& counts) {
  std::vector<std::string_view> pieces;
  split_by_pattern(pattern, text, pieces);
  for (std::string_view p : pieces) {
    auto it = counts.find(p);
    if (it == counts.end())
      counts.emplace(std::string(p), 1);
    else
      ++it->second;
  }
}

uint64_t pair_key(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 32) | b; }

struct HeapEntry {
  uint64_t count;
  uint64_t pair;
  // Max-heap on count; among equal counts the smaller pair (by ids) first, as HF's trainer.
  bool operator<(const HeapEntry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
};

// Tokens by id and ids by token, in the order they are added.
struct Vocabulary {
  std::vector<std::string> id_to_token;
  std::unordered_map<std::string, uint32_t> token_to_id;
  uint32_t add(const std::string& s) {
    auto [it, inserted] = token_to_id.emplace(s, static_cast<uint32_t>(id_to_token.size()));
    if (inserted) id_to_token.push_back(s);
    return it->second;
  }
};

// A distinct piece of the text as a sequence of token ids, with how often it was seen.
struct Word {
  std::vector<uint32_t> symbols;
  uint64_t count;
};

// The special tokens (ids 0, 1, ...), then the 256 byte-level tokens, whose ids go to byte_ids.
void add_initial_tokens(const std::vector<std::string>& special_tokens, Vocabulary& vocab, uint32_t byte_ids[256]) {
  const auto& alpha = byte_level::alphabet();
  for (const auto& s : special_tokens) vocab.add(s);
  // A special token spelled like a byte-level character would collide with the byte's token.
  for (int b = 0; b < 256; ++b) {
    if (vocab.token_to_id.count(alpha.byte_to_utf8[b]))
      throw TokenizerError(
          fmt::format("special token {} collides with the byte-level token of byte {}", alpha.byte_to_utf8[b], b));
    byte_ids[b] = vocab.add(alpha.byte_to_utf8[b]);
  }
}

// Words in a fixed order (the hash map's order is not), as byte-level symbol sequences.
std::vector<Word> make_words(const PieceCounts& counts, const uint32_t byte_ids[256]) {
  std::vector<std::pair<std::string_view, uint64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto& [piece, n] : sorted) {
    Word w{{}, n};
    for (unsigned char c : piece) w.symbols.push_back(byte_ids[c]);
    words.push_back(std::move(w));
  }
  return words;
}

// Merges the most frequent adjacent pair of `words` (adding its token to `vocab`) until the
// vocabulary has vocab_size tokens or no pair is seen min_frequency times. Returns the merges in order.
std::vector<std::pair<std::string, std::string>> learn_merges(std::vector<Word>& words, Vocabulary& vocab,
                                                              size_t vocab_size, uint64_t min_frequency) {
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;  // may hold stale or repeated entries
  for (uint32_t wi = 0; wi < words.size(); ++wi) {
    const Word& w = words[wi];
    for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
      uint64_t key = pair_key(w.symbols[i], w.symbols[i + 1]);
      pair_counts[key] += static_cast<int64_t>(w.count);
      where[key].push_back(wi);
    }
  }
  std::vector<HeapEntry> heap;
  for (const auto& [key, n] : pair_counts) heap.push_back({static_cast<uint64_t>(n), key});
  std::make_heap(heap.begin(), heap.end());

  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<uint32_t> last_visit(words.size(), UINT32_MAX);
  std::vector<uint32_t> merged;
  std::unordered_set<uint64_t> touched;
  while (vocab.id_to_token.size() < vocab_size && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    HeapEntry top = heap.back();
    heap.pop_back();
    auto pc = pair_counts.find(top.pair);
    int64_t actual = pc == pair_counts.end() ? 0 : pc->second;
    if (static_cast<uint64_t>(actual) != top.count) {  // stale: requeue with the current count
      if (actual > 0) {
        heap.push_back({static_cast<uint64_t>(actual), top.pair});
        std::push_heap(heap.begin(), heap.end());
      }
      continue;
    }
    if (actual <= 0 || static_cast<uint64_t>(actual) < min_frequency) break;

    uint32_t a = static_cast<uint32_t>(top.pair >> 32), b = static_cast<uint32_t>(top.pair);
    std::string left = vocab.id_to_token[a], right = vocab.id_to_token[b];
    uint32_t new_id = vocab.add(left + right);
    merges.emplace_back(std::move(left), std::move(right));
    uint32_t merge_index = static_cast<uint32_t>(merges.size());

    std::vector<uint32_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    touched.clear();
    for (uint32_t wi : affected) {
      if (last_visit[wi] == merge_index) continue;
      last_visit[wi] = merge_index;
      Word& w = words[wi];
      // Merge left to right, non-overlapping (so "aaa" with (a,a) gives "aa a", as in HF), then
      // replace the word's pair counts: pairs away from the merges cancel out.
      merged.clear();
      bool changed = false;
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == a && w.symbols[i + 1] == b) {
          merged.push_back(new_id);
          ++i;
          changed = true;
        } else {
          merged.push_back(w.symbols[i]);
        }
      }
      if (!changed) continue;
      auto c = static_cast<int64_t>(w.count);
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) pair_counts[pair_key(w.symbols[i], w.symbols[i + 1])] -= c;
      for (size_t i = 0; i + 1 < merged.size(); ++i) {
        uint64_t key = pair_key(merged[i], merged[i + 1]);
        pair_counts[key] += c;
        if (merged[i] == new_id || merged[i + 1] == new_id) {
          where[key].push_back(wi);
          touched.insert(key);
        }
      }
      w.symbols.swap(merged);
    }
    pair_counts.erase(top.pair);
    for (uint64_t key : touched) {
      int64_t n = pair_counts[key];
      if (n > 0) {
        heap.push_back({static_cast<uint64_t>(n), key});
        std::push_heap(heap.begin(), heap.end());
      }
    }
  }
  return merges;
}

// The tokenizer.json of a trained vocabulary, laid out as HF writes it (ordered keys, vocab in id order).
std::string tokenizer_json(const BpeTrainerOptions& options, const Vocabulary& vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges) {
  using ojson = nlohmann::ordered_json;
  ojson added = ojson::array();
  for (size_t i = 0; i < options.special_tokens.size(); ++i)
    added.push_back({{"id", i},
                     {"content", options.special_tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  ojson byte_level_post = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  ojson post = byte_level_post;
  if (options.bos_token) {
    uint32_t bos = vocab.token_to_id.at(*options.bos_token);
    ojson bos_item = {{"SpecialToken", {{"id", *options.bos_token}, {"type_id", 0}}}};
    ojson template_processing = {
        {"type", "TemplateProcessing"},
        {"single", {bos_item, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {bos_item, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens",
         {{*options.bos_token, {{"id", *options.bos_token}, {"ids", {bos}}, {"tokens", {*options.bos_token}}}}}}};
    post = {{"type", "Sequence"}, {"processors", {byte_level_post, template_processing}}};
  }
  ojson vocab_json = ojson::object();
  for (uint32_t id = 0; id < vocab.id_to_token.size(); ++id) vocab_json[vocab.id_to_token[id]] = id;
  ojson merge_list = ojson::array();
  for (const auto& [l, r] : merges) merge_list.push_back({l, r});

  ojson root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = added;
  root["normalizer"] = options.nfc ? ojson{{"type", "NFC"}} : ojson(nullptr);
  root["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", std::string(split_pattern_regex(options.pattern))}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  root["post_processor"] = post;
  root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"ignore_merges", false},
                   {"vocab", vocab_json},
                   {"merges", merge_list}};
  return root.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::strict) + "\n";
}

}  // namespace

BpeTrainer::BpeTrainer(BpeTrainerOptions options) : options_(std::move(options)) {
  if (options_.vocab_size < 256 + options_.special_tokens.size())
    throw TokenizerError(fmt::format("--vocab-size {} is too small: it must hold the 256 bytes and {} special tokens",
                                     options_.vocab_size, options_.special_tokens.size()));
  std::unordered_set<std::string> seen;
  for (const auto& s : options_.special_tokens) {
    if (s.empty()) throw TokenizerError("special tokens must not be empty");
    if (unicode::find_invalid_utf8(s) != std::string::npos)
      throw TokenizerError(fmt::format("special token is not valid UTF-8: {}", s));
    if (!seen.insert(s).second) throw TokenizerError(fmt::format("special token {} is given twice", s));
  }
  if (options_.bos_token && !seen.count(*options_.bos_token))
    throw TokenizerError(fmt::format("BOS token {} must be one of the special tokens", *options_.bos_token));
}

void BpeTrainer::count_segment(std::string_view text) {
  std::string normalized;
  if (options_.nfc) {
    normalized = unicode::normalize(text, unicode::NormalizationForm::NFC);
    text = normalized;
  }
  int threads =
      options_.threads > 0 ? options_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (threads <= 1 || text.size() < (1u << 20)) {
    count_pieces(options_.pattern, text, counts_);
    return;
  }
  // Large text: count disjoint chunks (cut where a piece must start) in parallel, then add up.
  const std::vector<size_t> cuts = safe_split_points(text, threads);
  std::vector<PieceCounts> partial(cuts.size() - 1);
  parallel_for_workers(static_cast<int>(partial.size()), [&](int c) {
    count_pieces(options_.pattern, text.substr(cuts[c], cuts[c + 1] - cuts[c]), partial[c]);
  });
  for (auto& part : partial)
    for (auto& [piece, n] : part) counts_[piece] += n;
}

void BpeTrainer::add_text(std::string_view text, const std::string& source) {
  if (size_t bad = unicode::find_invalid_utf8(text); bad != std::string_view::npos)
    throw TokenizerError(fmt::format("{}: invalid UTF-8 at byte offset {}", source, bad));
  bytes_seen_ += text.size();
  // Special tokens are cut out first, so their text never shapes the merges.
  AddedTokenMatcher matcher;
  for (size_t i = 0; i < options_.special_tokens.size(); ++i)
    matcher.add(options_.special_tokens[i], static_cast<int32_t>(i));
  size_t pos = 0;
  if (!matcher.empty()) {
    while (auto m = matcher.find(text, pos)) {
      if (m->begin > pos) count_segment(text.substr(pos, m->begin - pos));
      pos = m->end;
    }
  }
  if (pos < text.size()) count_segment(text.substr(pos));
}

void BpeTrainer::add_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TokenizerError(fmt::format("{}: cannot open the training file", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw TokenizerError(fmt::format("{}: read error", path));
  add_text(text, path);
}

std::string BpeTrainer::train() {
  Vocabulary vocab;
  uint32_t byte_ids[256];
  add_initial_tokens(options_.special_tokens, vocab, byte_ids);
  std::vector<Word> words = make_words(counts_, byte_ids);
  const auto merges = learn_merges(words, vocab, options_.vocab_size, options_.min_frequency);
  return tokenizer_json(options_, vocab, merges);
}

void BpeTrainer::train_to_file(const std::string& path) {
  std::string text = train();
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw TokenizerError(fmt::format("{}: cannot write", tmp));
    out << text;
    out.close();
    if (!out) throw TokenizerError(fmt::format("{}: write failed", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw TokenizerError(fmt::format("{}: cannot rename into place: {}", path, ec.message()));
  }
}

}  // namespace koff
