// Encoding and decoding: the stages of HF `tokenizers` in the same order, with the same
// boundaries (see tokenizer.h for the overview).
#include "tokenizer/tokenizer.h"

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <unordered_set>

#include "tokenizer/byte_level.h"
#include "tokenizer/thread_pool.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace koff {

namespace {

struct Segment {
  size_t begin, end;
  int32_t added;  // index into Impl::added, or -1 for text
};

bool is_white_space(char32_t cp) { return unicode::char_class(cp) & unicode::kSpace; }
// Approximates the Rust regex \w that HF uses for single_word (letters, marks, digits, '_').
bool is_word_char(char32_t cp) {
  return cp == '_' || (unicode::char_class(cp) & (unicode::kLetter | unicode::kNumber | unicode::kMark));
}
char32_t last_char(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return unicode::decode_utf8(s, i);
}

// HF's AddedVocabulary::find_matches: cut the matches of `matcher` out of `text`, honouring
// single_word (skip matches inside a word), lstrip and rstrip (swallow adjacent whitespace).
void split_added(const Tokenizer::Impl& impl, const AddedTokenMatcher& matcher, std::string_view text,
                 std::vector<Segment>& out) {
  if (text.empty()) return;
  if (matcher.empty()) {
    out.push_back({0, text.size(), -1});
    return;
  }
  size_t start_offset = 0, search = 0;
  while (auto m = matcher.find(text, search)) {
    search = m->end;
    const AddedToken& tok = impl.added[m->token_index];
    size_t start = m->begin, stop = m->end;
    if (tok.single_word) {
      bool start_ok = start == 0 || !is_word_char(last_char(text.substr(0, start)));
      size_t j = stop;
      bool stop_ok = stop == text.size() || !is_word_char(unicode::decode_utf8(text, j));
      if (!start_ok || !stop_ok) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t prev = s - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        size_t k = prev;
        if (!is_white_space(unicode::decode_utf8(text, k))) break;
        s = prev;
      }
      start = std::max(s, start_offset);  // whitespace already taken by the previous match stays there
    }
    if (tok.rstrip) {
      while (stop < text.size()) {
        size_t k = stop;
        if (!is_white_space(unicode::decode_utf8(text, k))) break;
        stop = k;
      }
      search = std::max(search, stop);
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, m->token_index});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  for (size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size()) {
    out.append(s, i, j - i);
    out.append(to);
  }
  out.append(s, i);
  s = std::move(out);
}

}  // namespace

std::string Tokenizer::Impl::normalize(std::string_view text) const {
  std::string s(text);
  for (const NormalizerStep& step : normalizers) {
    switch (step.kind) {
      case NormalizerStep::Kind::Unicode:
        s = unicode::normalize(s, step.form);
        break;
      case NormalizerStep::Kind::Prepend:
        if (!s.empty()) s.insert(0, step.pattern);
        break;
      case NormalizerStep::Kind::Replace:
        replace_all(s, step.pattern, step.content);
        break;
    }
  }
  return s;
}

// Runs pre-tokenizer steps [step, end) on `piece` and the model on what comes out. Every step
// works piece by piece, so the pieces stream through depth-first (no list of all the pieces of a
// long text is ever built). `first` marks the piece at offset 0 of the input, which Metaspace's
// prepend_scheme "first" needs.
void Tokenizer::Impl::run_steps(size_t step, std::string_view piece, bool first, std::vector<uint32_t>& ids) const {
  if (piece.empty()) return;  // HF drops empty splits
  if (step == pre_tokenizers.size()) {
    model->tokenize(piece, ids);
    return;
  }
  const PreTokenizerStep& s = pre_tokenizers[step];
  switch (s.kind) {
    case PreTokenizerStep::Kind::Split:
      for (size_t i = 0; i < piece.size();) {
        size_t end = split_pattern_piece_end(s.pattern, piece, i);
        run_steps(step + 1, piece.substr(i, end - i), first && i == 0, ids);
        i = end;
      }
      break;
    case PreTokenizerStep::Kind::ByteLevel: {
      std::string prefixed;
      if (s.add_prefix_space && piece[0] != ' ') {
        prefixed.reserve(piece.size() + 1);
        prefixed.push_back(' ');
        prefixed.append(piece);
        piece = prefixed;
      }
      if (!s.use_regex) {
        run_steps(step + 1, piece, first, ids);
        break;
      }
      for (size_t i = 0; i < piece.size();) {
        size_t end = split_pattern_piece_end(SplitPattern::Gpt2, piece, i);
        run_steps(step + 1, piece.substr(i, end - i), first && i == 0, ids);
        i = end;
      }
      break;
    }
    case PreTokenizerStep::Kind::Metaspace: {
      std::string text(piece);
      replace_all(text, " ", s.replacement);
      bool starts = text.compare(0, s.replacement.size(), s.replacement) == 0;
      bool prepend = s.prepend_scheme == PrependScheme::Always || (s.prepend_scheme == PrependScheme::First && first);
      if (prepend && !starts) text.insert(0, s.replacement);
      std::string_view v = text;
      if (!s.split) {
        run_steps(step + 1, v, first, ids);
        break;
      }
      // Split at each replacement character, which starts the next piece (MergedWithNext).
      size_t begin = 0;
      for (size_t j = v.find(s.replacement, 1); j != std::string_view::npos; j = v.find(s.replacement, j + 1)) {
        run_steps(step + 1, v.substr(begin, j - begin), first && begin == 0, ids);
        begin = j;
      }
      run_steps(step + 1, v.substr(begin), first && begin == 0, ids);
      break;
    }
  }
}

void Tokenizer::Impl::encode_pieces(std::string_view text, bool at_start, std::vector<uint32_t>& ids) const {
  run_steps(0, text, at_start, ids);
}

void Tokenizer::Impl::encode_segment(std::string_view text, bool at_start, std::vector<uint32_t>& ids,
                                     int threads) const {
  if (!chunkable || threads <= 1 || text.size() < Tokenizer::parallel_threshold()) {
    encode_pieces(text, at_start, ids);
    return;
  }
  // Cut at safe points near equal shares; each chunk then pre-tokenizes exactly as the whole would.
  const std::vector<size_t> cuts = safe_split_points(text, threads);
  size_t chunks = cuts.size() - 1;
  std::vector<std::vector<uint32_t>> parts(chunks);
  parallel_for_workers(static_cast<int>(chunks), [&](int c) {
    encode_pieces(text.substr(cuts[c], cuts[c + 1] - cuts[c]), at_start && c == 0, parts[c]);
  });
  for (auto& part : parts) ids.insert(ids.end(), part.begin(), part.end());
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

int Tokenizer::num_threads() const {
  if (num_threads_ > 0) return num_threads_;
  return std::max(1u, std::thread::hardware_concurrency());
}

static std::vector<uint32_t> encode_impl(const Tokenizer::Impl& impl, std::string_view text, bool add_special_tokens,
                                         int threads) {
  if (size_t bad = unicode::find_invalid_utf8(text); bad != std::string_view::npos)
    throw TokenizerError(fmt::format("input text: invalid UTF-8 at byte offset {}", bad));
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 3 + impl.prefix_ids.size() + impl.suffix_ids.size());
  if (add_special_tokens) ids = impl.prefix_ids;
  std::vector<Segment> raw_segments, norm_segments;
  split_added(impl, impl.raw_matcher, text, raw_segments);
  for (const Segment& seg : raw_segments) {
    if (seg.added >= 0) {
      ids.push_back(impl.added[seg.added].id);
      continue;
    }
    std::string_view piece = text.substr(seg.begin, seg.end - seg.begin);
    std::string normalized;
    if (!impl.normalizers.empty()) {
      normalized = impl.normalize(piece);
      piece = normalized;
    }
    norm_segments.clear();
    split_added(impl, impl.normalized_matcher, piece, norm_segments);
    for (const Segment& sub : norm_segments) {
      if (sub.added >= 0)
        ids.push_back(impl.added[sub.added].id);
      else
        impl.encode_segment(piece.substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0, ids,
                            threads);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), impl.suffix_ids.begin(), impl.suffix_ids.end());
  return ids;
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return encode_impl(*impl_, text, add_special_tokens, num_threads());
}

std::vector<std::vector<uint32_t>> Tokenizer::encode_batch(std::span<const std::string> texts,
                                                           bool add_special_tokens) const {
  std::vector<std::vector<uint32_t>> out(texts.size());
  int threads = std::min<int>(num_threads(), static_cast<int>(texts.size()));
  if (threads <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = encode_impl(*impl_, texts[i], add_special_tokens, 1);
    return out;
  }
  // Documents are handed out one at a time, so a few long ones do not leave threads idle.
  std::atomic<size_t> next{0};
  parallel_for_workers(threads, [&](int) {
    for (size_t i; (i = next.fetch_add(1)) < texts.size();) {
      try {
        out[i] = encode_impl(*impl_, texts[i], add_special_tokens, 1);
      } catch (...) {
        next = texts.size();  // stop the others early; the pool rethrows the first error
        throw;
      }
    }
  });
  return out;
}

namespace {

// HF's ByteFallback decoder: runs of <0xXX> tokens become their bytes when those form valid
// UTF-8, otherwise one U+FFFD per byte.
std::vector<std::string> decode_byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string bytes;
  auto flush = [&] {
    if (bytes.empty()) return;
    if (unicode::find_invalid_utf8(bytes) == std::string::npos) {
      out.push_back(bytes);
    } else {
      for (size_t i = 0; i < bytes.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
    }
    bytes.clear();
  };
  for (auto& t : tokens) {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); };
    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3]) && hex(t[4])) {
      bytes.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
      continue;
    }
    flush();
    out.push_back(std::move(t));
  }
  flush();
  return out;
}

std::vector<std::u32string> to_chars(const std::vector<std::string>& tokens) {
  std::vector<std::u32string> out;
  for (const auto& t : tokens) {
    std::u32string s;
    for (size_t i = 0; i < t.size();) s.push_back(unicode::decode_utf8(t, i));
    out.push_back(std::move(s));
  }
  return out;
}

std::string to_utf8(std::u32string_view s) {
  std::string out;
  for (char32_t c : s) unicode::append_utf8(out, c);
  return out;
}

}  // namespace

std::string Tokenizer::decode(std::span<const uint32_t> ids, bool skip_special_tokens) const {
  const Impl& impl = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (uint32_t id : ids) {
    std::optional<std::string> tok = id_to_token(id);
    if (!tok) throw TokenizerError(fmt::format("decode: id {} is not in the vocabulary of {}", id, impl.source));
    if (skip_special_tokens && impl.special_contents.count(*tok)) continue;
    tokens.push_back(std::move(*tok));
  }
  if (!impl.has_decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const DecoderStep& step : impl.decoders) {
    switch (step.kind) {
      case DecoderStep::Kind::ByteLevel: {
        // A token with a character outside the byte alphabet (an added token, say) is taken as
        // its UTF-8 bytes; the result is then decoded lossily, as HF does.
        std::string bytes;
        for (const auto& t : tokens)
          if (!byte_level::decode(t, bytes)) bytes += t;
        tokens.assign(1, unicode::utf8_lossy(bytes));
        break;
      }
      case DecoderStep::Kind::Replace:
        for (auto& t : tokens) replace_all(t, step.pattern, step.content);
        break;
      case DecoderStep::Kind::ByteFallback:
        tokens = decode_byte_fallback(std::move(tokens));
        break;
      case DecoderStep::Kind::Fuse: {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::Kind::Strip: {
        size_t i = 0;
        char32_t c = unicode::decode_utf8(step.content, i);
        auto chars = to_chars(tokens);
        for (size_t k = 0; k < chars.size(); ++k) {
          std::u32string_view s = chars[k];
          size_t start_cut = 0, stop_cut = s.size();
          for (size_t j = 0; j < step.start && j < s.size() && s[j] == c; ++j) start_cut = j + 1;
          for (size_t j = 0; j < step.stop && j < s.size() && s[s.size() - 1 - j] == c; ++j)
            stop_cut = s.size() - 1 - j;
          tokens[k] = start_cut < stop_cut ? to_utf8(s.substr(start_cut, stop_cut - start_cut)) : std::string();
        }
        break;
      }
      case DecoderStep::Kind::Metaspace: {
        size_t i = 0;
        char32_t repl = unicode::decode_utf8(step.content, i);
        auto chars = to_chars(tokens);
        for (size_t k = 0; k < chars.size(); ++k) {
          std::u32string s;
          for (char32_t ch : chars[k]) {
            if (ch != repl)
              s.push_back(ch);
            else if (!(k == 0 && step.prepend_scheme != PrependScheme::Never))
              s.push_back(U' ');
          }
          tokens[k] = to_utf8(s);
        }
        break;
      }
    }
  }
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

size_t Tokenizer::vocab_size() const { return size_t{impl_->max_id} + 1; }

std::optional<uint32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(std::string(token)); it != impl_->added_by_content.end())
    return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(uint32_t id) const {
  // Later entries of added_tokens override earlier ones with the same id, as in HF's map.
  if (id < impl_->added_by_id.size() && impl_->added_by_id[id] >= 0)
    return impl_->added[impl_->added_by_id[id]].content;
  std::string_view tok = impl_->model->id_to_token(id);
  if (tok.empty()) return std::nullopt;
  return std::string(tok);
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
const BpeModel& Tokenizer::model() const { return *impl_->model; }

}  // namespace koff
