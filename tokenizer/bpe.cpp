#include "tokenizer/bpe.h"

#include <fmt/core.h>

#include <algorithm>
#include <atomic>

#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_error.h"
#include "tokenizer/unicode.h"

namespace koff {

void MergeMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap *= 2;
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  size_ = 0;
}

void MergeMap::insert(uint32_t left, uint32_t right, Value value) {
  if ((size_ + 1) * 2 > slots_.size()) {
    std::vector<Slot> old = std::move(slots_);
    reserve(std::max<size_t>(size_ + 1, old.size()));
    for (const Slot& s : old)
      if (s.key != kEmpty) insert(static_cast<uint32_t>(s.key >> 32), static_cast<uint32_t>(s.key), s.value);
  }
  uint64_t key = (static_cast<uint64_t>(left) << 32) | right;
  for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == key) {
      s.value = value;
      return;
    }
    if (s.key == kEmpty) {
      s.key = key;
      s.value = value;
      ++size_;
      return;
    }
  }
}

namespace {

std::atomic<uint64_t> g_next_serial{1};

// Per-thread cache of piece -> ids. Keyed by the model's serial so that a thread moving between
// tokenizers (or a tokenizer freed and another allocated at the same address) never sees stale
// entries. Lock-free because each thread owns its own; cleared when it grows past the cap.
struct PieceCache {
  uint64_t serial = 0;
  std::unordered_map<std::string, std::vector<uint32_t>, StringHash, std::equal_to<>> map;
};
constexpr size_t kCacheCapacity = 1 << 17;
constexpr size_t kMaxCachedPieceBytes = 128;

struct Symbol {
  uint32_t id;
  int32_t prev;
  int32_t next;
  bool removed;
};
struct Candidate {
  uint32_t rank;
  uint32_t pos;
  uint32_t new_id;
  // The std heap functions build a max-heap: invert so that the lowest rank, then lowest position, pops.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(BpeConfig config, const std::string& source) : config_(std::move(config)) {
  serial_ = g_next_serial.fetch_add(1);
  uint32_t max_id = 0;
  for (const auto& [tok, id] : config_.vocab) max_id = std::max(max_id, id);
  id_to_token_.assign(config_.vocab.empty() ? 1 : size_t{max_id} + 1, {});
  id_present_.assign(id_to_token_.size(), false);
  for (const auto& [tok, id] : config_.vocab) {
    id_to_token_[id] = tok;
    id_present_[id] = true;
  }

  size_t prefix_len = config_.continuing_subword_prefix.size();
  merge_map_.reserve(config_.merges.size());
  for (size_t rank = 0; rank < config_.merges.size(); ++rank) {
    const auto& [a, b] = config_.merges[rank];
    auto ia = config_.vocab.find(a);
    auto ib = config_.vocab.find(b);
    if (ia == config_.vocab.end() || ib == config_.vocab.end())
      throw TokenizerError(fmt::format("{}: field 'model.merges[{}]': token \"{}\" is not in model.vocab", source, rank,
                                       ia == config_.vocab.end() ? a : b));
    // The merged token drops the right part's continuing-subword prefix (HF does the same).
    std::string merged = a + (b.size() >= prefix_len && b.compare(0, prefix_len, config_.continuing_subword_prefix) == 0
                                  ? b.substr(prefix_len)
                                  : b);
    auto im = config_.vocab.find(merged);
    if (im == config_.vocab.end())
      throw TokenizerError(
          fmt::format("{}: field 'model.merges[{}]': merged token \"{}\" is not in model.vocab", source, rank, merged));
    merge_map_.insert(ia->second, ib->second, {static_cast<uint32_t>(rank), im->second});
  }

  if (config_.unk_token) {
    auto it = config_.vocab.find(*config_.unk_token);
    if (it != config_.vocab.end()) unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = config_.vocab.find(fmt::format("<0x{:02X}>", b));
    byte_fallback_ids_[b] = it == config_.vocab.end() ? -1 : it->second;
  }

  // The byte fast path skips mapping pieces to the byte-level alphabet. It applies when every
  // byte has its own token (always true for real byte-level vocabularies) and no prefix/suffix
  // decorates the symbols; otherwise the general path below runs on the mapped text.
  if (config_.byte_level_input && prefix_len == 0 && config_.end_of_word_suffix.empty()) {
    const auto& alpha = byte_level::alphabet();
    byte_fast_path_ = true;
    for (int b = 0; b < 256; ++b) {
      auto it = config_.vocab.find(alpha.byte_to_utf8[b]);
      byte_ids_[b] = it == config_.vocab.end() ? -1 : it->second;
      if (byte_ids_[b] < 0) byte_fast_path_ = false;
    }
    if (byte_fast_path_ && config_.ignore_merges) {
      raw_vocab_.reserve(config_.vocab.size());
      for (const auto& [tok, id] : config_.vocab) {
        std::string raw;
        if (byte_level::decode(tok, raw)) raw_vocab_.emplace(std::move(raw), id);
      }
    }
  }
}

std::optional<uint32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = config_.vocab.find(token);
  if (it == config_.vocab.end()) return std::nullopt;
  return it->second;
}

std::string_view BpeModel::id_to_token(uint32_t id) const {
  if (id >= id_to_token_.size() || !id_present_[id]) return {};
  return id_to_token_[id];
}

void BpeModel::tokenize(std::string_view piece, std::vector<uint32_t>& out) const {
  if (piece.empty()) return;
  if (piece.size() > kMaxCachedPieceBytes) {
    tokenize_uncached(piece, out);
    return;
  }
  thread_local PieceCache cache;
  if (cache.serial != serial_) {
    cache.map.clear();
    cache.serial = serial_;
  }
  auto it = cache.map.find(piece);
  if (it != cache.map.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  size_t start = out.size();
  tokenize_uncached(piece, out);
  if (cache.map.size() >= kCacheCapacity) cache.map.clear();
  cache.map.emplace(std::string(piece), std::vector<uint32_t>(out.begin() + start, out.end()));
}

void BpeModel::tokenize_uncached(std::string_view piece, std::vector<uint32_t>& out) const {
  thread_local std::vector<uint32_t> ids;
  ids.clear();
  if (byte_fast_path_) {
    if (config_.ignore_merges) {
      auto it = raw_vocab_.find(piece);
      if (it != raw_vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    for (unsigned char b : piece) ids.push_back(static_cast<uint32_t>(byte_ids_[b]));
  } else {
    std::string mapped;
    std::string_view text = piece;
    if (config_.byte_level_input) {
      mapped = byte_level::encode(piece);
      text = mapped;
    }
    if (config_.ignore_merges) {
      auto it = config_.vocab.find(text);
      if (it != config_.vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    thread_local std::vector<uint32_t> lens;
    initial_symbols_from_text(text, ids, lens);
  }
  merge_all(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

// HF's BPE::merge_word: one symbol per character, decorated with the continuing-subword prefix
// (all but the first) and the end-of-word suffix (the last). A character missing from the vocab
// becomes its UTF-8 bytes as <0xXX> tokens (byte_fallback), else the unk token (consecutive unks
// fused when fuse_unk), else it is dropped, as HF does.
void BpeModel::initial_symbols_from_text(std::string_view text, std::vector<uint32_t>& ids,
                                         std::vector<uint32_t>& lens) const {
  lens.clear();
  bool pending_unk = false;
  std::string key;
  for (size_t i = 0; i < text.size();) {
    size_t start = i;
    i += unicode::utf8_length(static_cast<unsigned char>(text[i]));
    std::string_view ch = text.substr(start, i - start);
    std::string_view lookup = ch;
    if ((start != 0 && !config_.continuing_subword_prefix.empty()) ||
        (i == text.size() && !config_.end_of_word_suffix.empty())) {
      key.clear();
      if (start != 0) key += config_.continuing_subword_prefix;
      key += ch;
      if (i == text.size()) key += config_.end_of_word_suffix;
      lookup = key;
    }
    auto it = config_.vocab.find(lookup);
    if (it != config_.vocab.end()) {
      if (pending_unk) ids.push_back(*unk_id_);
      pending_unk = false;
      ids.push_back(it->second);
      continue;
    }
    if (config_.byte_fallback) {
      bool all = true;
      for (unsigned char b : lookup) all = all && byte_fallback_ids_[b] >= 0;
      if (all) {
        // HF leaves a pending unk in place here and emits it with the next known character.
        for (unsigned char b : lookup) ids.push_back(static_cast<uint32_t>(byte_fallback_ids_[b]));
        continue;
      }
    }
    if (config_.unk_token) {
      if (!unk_id_)
        throw TokenizerError(
            fmt::format("field 'model.unk_token': \"{}\" is not in model.vocab, and the input has "
                        "a character that needs it",
                        *config_.unk_token));
      if (pending_unk && !config_.fuse_unk) ids.push_back(*unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) ids.push_back(*unk_id_);
}

void BpeModel::merge_all(std::vector<uint32_t>& ids) const {
  if (ids.size() < 2) return;
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.resize(ids.size());
  heap.clear();
  auto push = [&](Candidate c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end());
  };
  const int32_t n = static_cast<int32_t>(ids.size());
  for (int32_t i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, false};
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const MergeMap::Value* m = merge_map_.find(ids[i], ids[i + 1]))
      heap.push_back({m->rank, static_cast<uint32_t>(i), m->new_id});
  }
  std::make_heap(heap.begin(), heap.end());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Candidate top = heap.back();
    heap.pop_back();
    Symbol& cur = symbols[top.pos];
    if (cur.removed || cur.next < 0) continue;
    Symbol& right = symbols[cur.next];
    // Skip stale entries: the pair at this position must still produce the same token.
    const MergeMap::Value* m = merge_map_.find(cur.id, right.id);
    if (!m || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    right.removed = true;
    cur.next = right.next;
    if (cur.next >= 0) symbols[cur.next].prev = static_cast<int32_t>(top.pos);
    if (cur.prev >= 0) {
      if (const MergeMap::Value* pm = merge_map_.find(symbols[cur.prev].id, cur.id))
        push({pm->rank, static_cast<uint32_t>(cur.prev), pm->new_id});
    }
    if (cur.next >= 0) {
      if (const MergeMap::Value* nm = merge_map_.find(cur.id, symbols[cur.next].id))
        push({nm->rank, top.pos, nm->new_id});
    }
  }
  ids.clear();
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace koff
