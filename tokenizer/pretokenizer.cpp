#include "tokenizer/pretokenizer.h"

#include <array>

#include "tokenizer/unicode.h"

namespace koff {

namespace {

constexpr std::string_view kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen35Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The three classes the patterns distinguish; every character is exactly one of them or "other"
// ([^\s\p{L}\p{N}]).
enum Cls : uint8_t { kOther = 0, kL = 1, kN = 2, kS = 3 };

constexpr std::array<uint8_t, 128> make_ascii_classes() {
  std::array<uint8_t, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[c] = kL;
    else if (c >= '0' && c <= '9')
      t[c] = kN;
    else if (c == ' ' || (c >= 0x09 && c <= 0x0D))
      t[c] = kS;
    else
      t[c] = kOther;
  }
  return t;
}
constexpr std::array<uint8_t, 128> kAscii = make_ascii_classes();

struct Char {
  char32_t cp;
  Cls cls;
  size_t next;  // byte offset after this character
};

// Decodes the character at byte i (i < text.size()). With `marks_are_letters` (Qwen 3.5's
// [\p{L}\p{M}]) a combining mark is in the letter class kL; otherwise it is kOther.
template <bool marks_are_letters = false>
inline Char at(std::string_view text, size_t i) {
  auto b = static_cast<unsigned char>(text[i]);
  if (b < 0x80) return {b, static_cast<Cls>(kAscii[b]), i + 1};
  size_t j = i;
  char32_t cp = unicode::decode_utf8(text, j);
  uint8_t bits = unicode::char_class(cp);
  constexpr uint8_t letter = marks_are_letters ? (unicode::kLetter | unicode::kMark) : unicode::kLetter;
  Cls cls = (bits & letter) ? kL : (bits & unicode::kNumber) ? kN : (bits & unicode::kSpace) ? kS : kOther;
  return {cp, cls, j};
}

// End of the run of characters of class `cls` starting at i.
template <bool marks_are_letters = false>
inline size_t run_end(std::string_view text, size_t i, Cls cls) {
  while (i < text.size()) {
    Char c = at<marks_are_letters>(text, i);
    if (c.cls != cls) break;
    i = c.next;
  }
  return i;
}

// 's|'t|'re|'ve|'m|'ll|'d after an apostrophe at i; returns the match end or 0.
// Case-insensitive (Llama 3, Qwen) means Unicode case folding as Oniguruma does it: besides the
// ASCII upper case, U+017F LATIN SMALL LETTER LONG S folds to 's'. No other character folds to
// one of t, r, e, v, m, l, d.
size_t match_contraction(std::string_view text, size_t i, bool ignore_case) {
  size_t j = i + 1;
  if (j >= text.size()) return 0;
  Char c1 = at(text, j);
  char32_t a = c1.cp;
  if (ignore_case) {
    if (a >= 'A' && a <= 'Z') a += 'a' - 'A';
    if (a == 0x17F) a = 's';
  }
  auto second_is = [&](char32_t want) {
    if (c1.next >= text.size()) return false;
    char32_t b =
        static_cast<unsigned char>(text[c1.next]);  // 'e' / 'l' are ASCII; a non-ASCII lead byte never equals them
    if (ignore_case && b >= 'A' && b <= 'Z') b += 'a' - 'A';
    return b == want;
  };
  switch (a) {
    case 's':
    case 't':
    case 'm':
    case 'd':
      return c1.next;
    case 'r':
    case 'v':
      return second_is('e') ? c1.next + 1 : 0;
    case 'l':
      return second_is('l') ? c1.next + 1 : 0;
    default:
      return 0;
  }
}

// \s+(?!\S)|\s+ on the whitespace run [i, end): the first alternative backtracks to leave the last
// whitespace character to prefix the next word, unless the run ends the text or is one character.
inline size_t whitespace_tail(std::string_view text, size_t i, size_t end) {
  if (end == text.size()) return end;
  // Start of the last character of the run.
  size_t last = end - 1;
  while ((static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) --last;
  return last > i ? last : end;
}

size_t match_gpt2(std::string_view text, size_t i) {
  Char c0 = at(text, i);
  if (c0.cp == '\'') {
    if (size_t e = match_contraction(text, i, false)) return e;
  }
  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
  if (c0.cp == ' ' && c0.next < text.size()) {
    Char c1 = at(text, c0.next);
    if (c1.cls != kS) return run_end(text, c1.next, c1.cls);
  }
  if (c0.cls != kS) return run_end(text, c0.next, c0.cls);
  size_t end = run_end(text, c0.next, kS);
  return whitespace_tail(text, i, end);
}

// Llama 3 (max_digits 3), Qwen 2 (1) and, with marks_are_letters, Qwen 3.5: there a combining mark
// joins the letter runs ([\p{L}\p{M}]+) and leaves the punctuation class; a mark as the optional
// prefix of [^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+ gives the same piece as a mark inside the run.
template <bool marks_are_letters = false>
size_t match_llama3(std::string_view text, size_t i, int max_digits) {
  constexpr auto char_at = at<marks_are_letters>;
  constexpr auto run = run_end<marks_are_letters>;
  Char c0 = char_at(text, i);
  if (c0.cp == '\'') {
    if (size_t e = match_contraction(text, i, true)) return e;
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c0.cls == kL) return run(text, c0.next, kL);
  if (c0.cls != kN && c0.cp != '\r' && c0.cp != '\n' && c0.next < text.size()) {
    Char c1 = char_at(text, c0.next);
    if (c1.cls == kL) return run(text, c1.next, kL);
  }
  // \p{N}{1,3} (or \p{N})
  if (c0.cls == kN) {
    size_t j = c0.next;
    for (int k = 1; k < max_digits && j < text.size(); ++k) {
      Char c = char_at(text, j);
      if (c.cls != kN) break;
      j = c.next;
    }
    return j;
  }
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  size_t j = i;
  if (c0.cp == ' ' && c0.next < text.size() && char_at(text, c0.next).cls == kOther) j = c0.next;
  if (j != i || c0.cls == kOther) {
    j = run(text, j, kOther);
    while (j < text.size() && (text[j] == '\r' || text[j] == '\n')) ++j;
    return j;
  }
  // c0 is whitespace. `\s*[\r\n]+`: \s* backtracks from the end of the whitespace run to its
  // last \r or \n, which [\r\n]+ then takes.
  size_t end = run(text, i, kS);
  for (size_t k = end; k > i; --k) {
    if (text[k - 1] == '\r' || text[k - 1] == '\n') return k;
  }
  return whitespace_tail(text, i, end);
}

}  // namespace

std::optional<SplitPattern> recognize_split_pattern(std::string_view regex) {
  if (regex == kGpt2Regex) return SplitPattern::Gpt2;
  if (regex == kLlama3Regex) return SplitPattern::Llama3;
  if (regex == kQwen2Regex) return SplitPattern::Qwen2;
  if (regex == kQwen35Regex) return SplitPattern::Qwen35;
  return std::nullopt;
}

std::string_view split_pattern_regex(SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::Gpt2:
      return kGpt2Regex;
    case SplitPattern::Llama3:
      return kLlama3Regex;
    case SplitPattern::Qwen2:
      return kQwen2Regex;
    case SplitPattern::Qwen35:
      return kQwen35Regex;
  }
  return {};
}

std::optional<SplitPattern> split_pattern_from_name(std::string_view name) {
  if (name == "gpt2") return SplitPattern::Gpt2;
  if (name == "llama3") return SplitPattern::Llama3;
  if (name == "qwen2" || name == "qwen") return SplitPattern::Qwen2;
  if (name == "qwen35") return SplitPattern::Qwen35;
  return std::nullopt;
}

size_t split_pattern_piece_end(SplitPattern pattern, std::string_view text, size_t pos) {
  switch (pattern) {
    case SplitPattern::Gpt2:
      return match_gpt2(text, pos);
    case SplitPattern::Llama3:
      return match_llama3(text, pos, 3);
    case SplitPattern::Qwen35:
      return match_llama3<true>(text, pos, 1);
    default:
      return match_llama3(text, pos, 1);
  }
}

void split_by_pattern(SplitPattern pattern, std::string_view text, std::vector<std::string_view>& out) {
  for (size_t i = 0; i < text.size();) {
    size_t end = split_pattern_piece_end(pattern, text, i);
    out.push_back(text.substr(i, end - i));
    i = end;
  }
}

bool is_safe_split_point(std::string_view text, size_t pos) {
  if (pos == 0 || pos >= text.size()) return false;
  if ((static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) return false;  // not a character start
  size_t prev = pos - 1;
  while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
  // \r and \n are excluded: ` ?[^\s\p{L}\p{N}]+[\r\n]*` continues into them.
  return at(text, prev).cls != kS && at(text, pos).cls == kS && text[pos] != '\r' && text[pos] != '\n';
}

std::vector<size_t> safe_split_points(std::string_view text, int parts) {
  std::vector<size_t> cuts{0};
  for (int k = 1; k < parts; ++k) {
    size_t p = std::max(cuts.back() + 1, text.size() * static_cast<size_t>(k) / static_cast<size_t>(parts));
    while (p < text.size() && !is_safe_split_point(text, p)) ++p;
    if (p >= text.size()) break;
    cuts.push_back(p);
  }
  cuts.push_back(text.size());
  return cuts;
}

}  // namespace koff
