#include "tokenizer/unicode.h"

#include <algorithm>
#include <vector>

namespace koff::unicode {

namespace {

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr char32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

void decompose_into(char32_t cp, bool compat, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {  // Hangul syllables decompose algorithmically
    char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  using unicode_tables::kDecompositions;
  const auto* begin = kDecompositions;
  const auto* end = kDecompositions + unicode_tables::kDecompositionCount;
  const auto* it = std::lower_bound(begin, end, cp, [](const auto& e, char32_t c) { return e.code_point < c; });
  // Entries for one code point: canonical (compat=0) first if it exists, then compat (compat=1).
  const unicode_tables::DecompositionEntry* found = nullptr;
  for (; it != end && it->code_point == cp; ++it) {
    if (!it->compat) found = it;
    if (it->compat && compat) found = it;
  }
  if (!found) {
    out.push_back(cp);
    return;
  }
  for (uint32_t k = 0; k < found->length; ++k) out.push_back(unicode_tables::kDecompositionData[found->offset + k]);
}

// Returns the primary composite of (a, b), or 0 when there is none.
char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  using unicode_tables::kCompositions;
  const auto* end = kCompositions + unicode_tables::kCompositionCount;
  const auto* it = std::lower_bound(kCompositions, end, std::pair{a, b}, [](const auto& e, const auto& key) {
    return e.first != key.first ? e.first < key.first : e.second < key.second;
  });
  if (it != end && it->first == a && it->second == b) return it->composite;
  return 0;
}

}  // namespace

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Length of the valid UTF-8 sequence at s[i], or 0 if it is invalid; when invalid, *bad_len gets
// the length of the maximal invalid subpart (the unit Rust's from_utf8_lossy replaces).
static size_t valid_sequence_at(std::string_view s, size_t i, size_t* bad_len) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode Table 3-7)
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    *bad_len = 1;
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (i + k >= s.size() || byte(i + k) < l || byte(i + k) > h) {
      *bad_len = k;
      return 0;
    }
  }
  return need;
}

size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0, bad = 0;
  while (i < s.size()) {
    // ASCII fast path: 8 bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t w;
      std::copy_n(s.data() + i, 8, reinterpret_cast<char*>(&w));
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= s.size()) break;
    size_t n = valid_sequence_at(s, i, &bad);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0, bad = 0;
  while (i < bytes.size()) {
    size_t n = valid_sequence_at(bytes, i, &bad);
    if (n) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

bool is_nfc_quick(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    if (!(char_class(decode_utf8(s, i)) & kNfcSafe)) return false;
  }
  return true;
}

static std::string normalize_full(std::string_view s, NormalizationForm form) {
  bool compat = form == NormalizationForm::NFKC || form == NormalizationForm::NFKD;
  bool compose = form == NormalizationForm::NFC || form == NormalizationForm::NFKC;

  // 1. Full decomposition.
  std::vector<char32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t cp = decode_utf8(s, i);
    if (cp < 0xC0) {
      cps.push_back(cp);  // nothing below U+00C0 decomposes canonically
      if (!compat || cp < 0xA0) continue;
      cps.pop_back();
    }
    decompose_into(cp, compat, cps);
  }
  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // 3. Canonical composition (UAX #15): each character composes with the last starter unless a
  // character in between blocks it (same or higher combining class, or a starter).
  if (compose && !cps.empty()) {
    size_t starter = 0, out = 1;
    bool have_starter = combining_class(cps[0]) == 0;
    int last_ccc = have_starter ? 0 : 256;
    for (size_t i = 1; i < cps.size(); ++i) {
      char32_t cp = cps[i];
      int ccc = combining_class(cp);
      bool blocked = out - 1 != starter && (last_ccc == 0 || last_ccc >= ccc);
      if (have_starter && !blocked) {
        if (char32_t composite = compose_pair(cps[starter], cp)) {
          cps[starter] = composite;
          continue;
        }
      }
      if (ccc == 0) {
        starter = out;
        have_starter = true;
      }
      last_ccc = ccc;
      cps[out++] = cp;
    }
    cps.resize(out);
  }
  std::string result;
  result.reserve(s.size());
  for (char32_t cp : cps) append_utf8(result, cp);
  return result;
}

std::string normalize(std::string_view s, NormalizationForm form) {
  if (form != NormalizationForm::NFC) return normalize_full(s, form);
  // NFC-safe characters are starters that nothing before them can combine with, so the text can
  // be cut right before each of them and normalized piecewise: runs without unsafe characters are
  // copied as they are, and only the short stretches around combining marks do the full work.
  std::string out;
  size_t segment = 0;  // start of the current stretch (at a safe character, or 0)
  bool dirty = false;  // the stretch holds an unsafe character
  size_t copied = 0;   // s[0, copied) is already in `out`
  auto close = [&](size_t end) {
    if (!dirty) return;
    out.append(s.substr(copied, segment - copied));
    out += normalize_full(s.substr(segment, end - segment), form);
    copied = end;
    dirty = false;
  };
  for (size_t i = 0; i < s.size();) {
    size_t start = i;
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      close(start);
      segment = start;
      continue;
    }
    if (char_class(decode_utf8(s, i)) & kNfcSafe) {
      close(start);
      segment = start;
    } else {
      dirty = true;
    }
  }
  close(s.size());
  if (copied == 0) return std::string(s);
  out.append(s.substr(copied));
  return out;
}

}  // namespace koff::unicode
